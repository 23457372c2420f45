package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	jose "github.com/go-jose/go-jose/v4"
)

// Line types of the JSON Lines export, one JSON object per line:
//
//	{"type":"start","position":P,"head":H}        the chain before the first event: position P, hash H
//	{"type":"event","position":p,"hash":h,"event":{…}}  the event sealed at p, h(p)
//	{"type":"checkpoint","position":N,"head":H,"sealed_at":T,"kid":K,"jws":J}
//	{"type":"end","position":L,"events":n,"checkpoints":m}
//
// An export starts with one start line, ends with one end line, and puts
// each checkpoint after the event at its position. Its last event is
// always covered by its last checkpoint.
const (
	LineStart      = "start"
	LineEvent      = "event"
	LineCheckpoint = "checkpoint"
	LineEnd        = "end"
)

// Line is one line of an export.
type Line struct {
	Type     string  `json:"type"`
	Position int64   `json:"position"`
	Hash     *Hash   `json:"hash,omitempty"`
	Event    *Record `json:"event,omitempty"`
	Head     *Hash   `json:"head,omitempty"`
	SealedAt string  `json:"sealed_at,omitempty"`
	KID      string  `json:"kid,omitempty"`
	JWS      string  `json:"jws,omitempty"`
	// Events and Checkpoints count the lines of an end line.
	Events      *int64 `json:"events,omitempty"`
	Checkpoints *int64 `json:"checkpoints,omitempty"`
}

// Writer writes an export.
type Writer struct {
	w                   *bufio.Writer
	events, checkpoints int64
	last                int64
	err                 error
}

// NewWriter writes an export to w; Start first, Close last.
func NewWriter(w io.Writer) *Writer { return &Writer{w: bufio.NewWriterSize(w, 64<<10)} }

func (w *Writer) line(l Line) error {
	if w.err != nil {
		return w.err
	}
	b, err := json.Marshal(l)
	if err != nil {
		w.err = fmt.Errorf("audit: export: %w", err)
		return w.err
	}
	b = append(b, '\n')
	if _, err := w.w.Write(b); err != nil {
		w.err = fmt.Errorf("audit: export: %w", err)
	}
	return w.err
}

// Start writes the chain's state before the first event.
func (w *Writer) Start(position int64, head Hash) error {
	w.last = position
	return w.line(Line{Type: LineStart, Position: position, Head: &head})
}

// Event writes the event sealed at position.
func (w *Writer) Event(position int64, hash Hash, rec *Record) error {
	w.events++
	w.last = position
	return w.line(Line{Type: LineEvent, Position: position, Hash: &hash, Event: rec})
}

// Checkpoint writes a checkpoint.
func (w *Writer) Checkpoint(c Checkpoint) error {
	w.checkpoints++
	return w.line(Line{Type: LineCheckpoint, Position: c.Position, Head: &c.Head, SealedAt: c.SealedAt, KID: c.KID, JWS: c.JWS})
}

// Close writes the end line and flushes.
func (w *Writer) Close() error {
	if err := w.line(Line{Type: LineEnd, Position: w.last, Events: &w.events, Checkpoints: &w.checkpoints}); err != nil {
		return err
	}
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	return nil
}

// maxLine is the longest export line VerifyExport reads.
const maxLine = 256 << 20

// VerifyExport reads an export from r and verifies it against keys,
// offline. progress, when not nil, is called with the bytes read so far
// every few thousand lines.
func VerifyExport(r io.Reader, keys *jose.JSONWebKeySet, progress func(int64)) (Report, error) {
	v := NewVerifier(keys)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	var (
		n, read  int64
		ended    bool
		lastLine Line
	)
	for sc.Scan() {
		n++
		read += int64(len(sc.Bytes())) + 1
		if progress != nil && n%4096 == 0 {
			progress(read)
		}
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		if ended {
			return v.Report(), &Break{Kind: BreakFormat, Position: lastLine.Position, Detail: fmt.Sprintf("line %d: lines after the end line", n)}
		}
		var l Line
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			return v.Report(), &Break{Kind: BreakFormat, Position: lastLine.Position, Detail: fmt.Sprintf("line %d: %v", n, err)}
		}
		if n == 1 && l.Type != LineStart {
			return v.Report(), &Break{Kind: BreakFormat, Detail: "line 1: an export begins with its start line"}
		}
		var err error
		switch l.Type {
		case LineStart:
			if l.Head == nil {
				return v.Report(), &Break{Kind: BreakFormat, Position: l.Position, Detail: fmt.Sprintf("line %d: a start line without its head", n)}
			}
			err = v.Start(l.Position, *l.Head)
		case LineEvent:
			if l.Hash == nil {
				return v.Report(), &Break{Kind: BreakFormat, Position: l.Position, Detail: fmt.Sprintf("line %d: an event line without its hash", n)}
			}
			var id int64
			if l.Event != nil {
				id = l.Event.ID
			}
			err = v.Event(l.Position, id, *l.Hash, l.Event)
		case LineCheckpoint:
			if l.Head == nil {
				return v.Report(), &Break{Kind: BreakFormat, Position: l.Position, Detail: fmt.Sprintf("line %d: a checkpoint without its head", n)}
			}
			err = v.Checkpoint(Checkpoint{Claims: Claims{Position: l.Position, Head: *l.Head, SealedAt: l.SealedAt}, KID: l.KID, JWS: l.JWS})
		case LineEnd:
			ended = true
			if err = v.Finish(); err == nil {
				rep := v.Report()
				if l.Events == nil || l.Checkpoints == nil || *l.Events != rep.Events || *l.Checkpoints != rep.Checkpoints || l.Position != max(rep.Last, lastLine.Position) {
					return rep, &Break{Kind: BreakFormat, Position: rep.Last, Detail: fmt.Sprintf("line %d: the end line does not count the lines before it", n)}
				}
			}
		default:
			return v.Report(), &Break{Kind: BreakFormat, Position: lastLine.Position, Detail: fmt.Sprintf("line %d: unknown line type %q", n, l.Type)}
		}
		if err != nil {
			return v.Report(), err
		}
		lastLine = l
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return v.Report(), &Break{Kind: BreakFormat, Position: lastLine.Position, Detail: fmt.Sprintf("line %d is longer than %d MiB", n+1, maxLine>>20)}
		}
		return v.Report(), fmt.Errorf("audit: read export: %w", err)
	}
	if !ended {
		rep := v.Report()
		if err := v.Finish(); err != nil {
			return rep, err
		}
		return v.Report(), &Break{Kind: BreakTruncated, Position: rep.Last + 1, Detail: "the export has no end line: it was cut short"}
	}
	return v.Report(), nil
}
