package policy

// Input is what one rule condition sees: one authorization_details element
// and its context. The `cel` tags name the fields in CEL; the package
// documentation lists them.
type Input struct {
	// Details is one decoded authorization_details element (RFC 9396 §2):
	// objects as map[string]any, arrays as []any, numbers as json.Number,
	// float64 or int64. It is read, never modified.
	Details map[string]any
	Agent   Agent
	User    User
	Request Request
	Recent  Recent
}

// Agent is the registration of the agent (the CIBA client) that asks.
type Agent struct {
	ID     string            `cel:"id"`
	Name   string            `cel:"name"`
	Domain string            `cel:"domain"`
	Labels map[string]string `cel:"labels"`
}

// User is the user on whose behalf the agent asks (the CIBA login_hint).
type User struct {
	ID     string   `cel:"id"`
	Roles  []string `cel:"roles"`
	Groups []string `cel:"groups"`
}

// Request holds the backchannel authentication request's own parameters
// (OpenID CIBA Core §7.1) and when it arrived. Hour (0–23) and Weekday (0 is
// Sunday, as time.Weekday) are in the server's configured time zone; the
// caller computes them so that evaluation never reads a clock.
type Request struct {
	BindingMessage  string   `cel:"binding_message"`
	ACRValues       []string `cel:"acr_values"`
	RequestedExpiry int64    `cel:"requested_expiry"` // seconds; 0 when the client sent none
	Hour            int64    `cel:"hour"`
	Weekday         int64    `cel:"weekday"`
	// Amounts is what the whole request moves: for each currency, the sum
	// of the amounts of its elements in that currency (rar.Details.Totals,
	// exact, then in major units), and Elements the number of elements, so
	// that rules see a payment split across elements as the whole it is.
	// Amounts of different currencies are never added: request.amount and
	// request.currency are defined only while there is at most one.
	Amounts  map[string]float64 `cel:"amounts"`
	Elements int64              `cel:"elements"`
}

// Recent is the velocity of earlier requests of the element's request type:
// those of this agent (any user) and those of this user (any agent). The
// caller computes it before evaluation; see the package documentation for
// the exact definition of every number.
type Recent struct {
	Agent Windows `cel:"agent"`
	User  Windows `cel:"user"`
}

// Windows holds the counts over the last hour and the last 24 hours.
type Windows struct {
	Hour Counts `cel:"hour"`
	Day  Counts `cel:"day"`
}

// Counts splits a window's requests by what became of them. Total counts
// every request in the window, including expired and cancelled ones, so it
// is at least the sum of the four others.
type Counts struct {
	Total    Tally `cel:"total"`
	Allowed  Tally `cel:"allowed"`  // auto-allowed by a rule, no human
	Approved Tally `cel:"approved"` // approved by humans
	Denied   Tally `cel:"denied"`   // denied by a rule or by a human
	Pending  Tally `cel:"pending"`  // still waiting for a human
}

// Tally is how many requests had an element of the type (each request
// counted once) and, per currency, the sum of those requests' amounts
// (Request.Amounts) in major units. A currency none of them had is absent
// from Sums. sum, defined only while Sums has at most one currency, is that
// currency's sum.
type Tally struct {
	Count int64              `cel:"count"`
	Sums  map[string]float64 `cel:"sums"`
}
