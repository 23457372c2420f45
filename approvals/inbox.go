package approvals

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"

	"github.com/countersign/countersign/rar"
)

// InboxPageSize is how many decided requests one page of a reviewer's
// history holds.
const InboxPageSize = 20

// maxPendingShown bounds the pending requests an inbox lists.
const maxPendingShown = 100

// Inbox is what a reviewer has to look at: the live pending requests they
// may review (their own, and those of quorum groups they belong to), newest
// first, and below them a page of the decided ones that were theirs or that
// they reviewed.
type Inbox struct {
	Pending []InboxItem
	History []InboxItem
	// Page is the history page shown (from 0); More says whether another
	// follows.
	Page int
	More bool
	Now  time.Time
}

// InboxItem is one request as a list shows it.
type InboxItem struct {
	Request   Request
	AgentName string
	// Sentence is the first element's summary sentence, and Elements how
	// many the request holds.
	Sentence string
	Elements int
}

// prefixedRequestColumns are requestColumns of the requests aliased r.
var prefixedRequestColumns = "r." + strings.ReplaceAll(strings.Join(strings.Fields(requestColumns), " "), ", ", ", r.")

var inboxPendingSQL = `
SELECT now() AS now, a.name AS agent_name, ` + prefixedRequestColumns + `
FROM requests r JOIN agents a ON a.id = r.agent_id
WHERE r.state = 'pending' AND r.expires_at > now()
	AND (r.user_id = $1 OR EXISTS (
		SELECT 1 FROM jsonb_array_elements(r.quorum) q WHERE q ->> 'Group' = ANY($2)))
ORDER BY r.created_at DESC, r.id DESC
LIMIT ` + strconv.Itoa(maxPendingShown)

var inboxHistorySQL = `
SELECT now() AS now, a.name AS agent_name, ` + prefixedRequestColumns + `
FROM requests r JOIN agents a ON a.id = r.agent_id
WHERE NOT (r.state = 'pending' AND r.expires_at > now())
	AND (r.user_id = $1 OR EXISTS (SELECT 1 FROM reviews v WHERE v.request_id = r.id AND v.reviewer = $1))
ORDER BY r.created_at DESC, r.id DESC
LIMIT $2 OFFSET $3`

type inboxRow struct {
	Now       time.Time `db:"now"`
	AgentName string    `db:"agent_name"`
	Request
}

// Inbox returns user's inbox with history page page (from 0).
func (s *Service) Inbox(ctx context.Context, user User, page int) (Inbox, error) {
	if page < 0 {
		page = 0
	}
	var pending, history []inboxRow
	if err := s.store.db.SelectContext(ctx, &pending, inboxPendingSQL, user.ID, pq.StringArray(nonNil(user.Groups))); err != nil {
		return Inbox{}, fmt.Errorf("approvals: inbox: %w", err)
	}
	if err := s.store.db.SelectContext(ctx, &history, inboxHistorySQL, user.ID, InboxPageSize+1, page*InboxPageSize); err != nil {
		return Inbox{}, fmt.Errorf("approvals: inbox: %w", err)
	}
	in := Inbox{Page: page, Now: time.Now()}
	if len(history) > InboxPageSize {
		in.More, history = true, history[:InboxPageSize]
	}
	item := func(r inboxRow) InboxItem {
		if r.Now.After(in.Now) {
			in.Now = r.Now
		}
		it := InboxItem{Request: r.Request, AgentName: r.AgentName}
		if sums := s.summarize(ctx, r.Request); len(sums) > 0 {
			it.Sentence, it.Elements = sums[0].Sentence, len(sums)
		}
		return it
	}
	for _, r := range pending {
		in.Pending = append(in.Pending, item(r))
	}
	for _, r := range history {
		in.History = append(in.History, item(r))
	}
	return in, nil
}

// summarize describes r's details for a person, under the type versions
// the request was made with; nil when they cannot be read (the page then
// shows the canonical JSON).
func (s *Service) summarize(ctx context.Context, r Request) []rar.Summary {
	reg, err := s.types.RegistryAt(ctx, r.TypeVersions)
	if err != nil {
		s.logger.Warn("request types unavailable for a summary", "request", r.ID, "err", err)
		return nil
	}
	d, err := reg.Parse([]byte(r.DetailsCanonical))
	if err != nil {
		return nil
	}
	return reg.Summarize(d)
}
