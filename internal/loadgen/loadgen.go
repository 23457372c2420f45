// Package loadgen drives a running Countersign server over HTTP with
// concurrent simulated agents, for `countersign load`: a bounded number of
// flows after a discarded warm-up, with the latency of each step, the
// errors by kind, the server's CPU time and PostgreSQL's work per flow.
//
// A flow is one scenario run once:
//
//	auto         bc-authorize → token (the policy allows the request at once)
//	auto-redeem  auto, then the resource server redeems the token
//	human        bc-authorize → a review by the simulated approver (the
//	             domain API, approvals.Service.Review) → token, collected by
//	             one poll or after the ping to a receiver on loopback
//
// Load goes to loopback only: Run refuses a base URL whose host is not a
// loopback address, and its connections refuse any other address.
package loadgen

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Scenario is what one flow does.
type Scenario string

// Scenarios.
const (
	Auto       Scenario = "auto"
	AutoRedeem Scenario = "auto-redeem"
	Human      Scenario = "human"
)

// ParseScenario returns the scenario named s.
func ParseScenario(s string) (Scenario, error) {
	switch sc := Scenario(s); sc {
	case Auto, AutoRedeem, Human:
		return sc, nil
	}
	return "", fmt.Errorf("loadgen: unknown scenario %q (want auto, auto-redeem or human)", s)
}

// Token delivery of the human scenario (CIBA §5).
const (
	DeliveryPoll = "poll"
	DeliveryPing = "ping"
)

// Steps whose latency a Summary reports: the HTTP endpoints, and in the
// human scenario the review through the domain API and the wait from the
// review to the ping's arrival.
const (
	StepAuthorize = "/bc-authorize"
	StepToken     = "/token"
	StepRedeem    = "/redeem"
	StepReview    = "review"
	StepPing      = "ping"
)

// The authorization_details of the flows. The auto scenarios ask for a
// payment that the load policy allows at once; the human scenario for one it
// leaves to the user.
const (
	DetailsAuto  = `[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"10.00"},"creditorName":"Load Test GmbH","creditorAccount":{"iban":"DE89370400440532013000"},"remittanceInformation":"countersign load"}]`
	DetailsHuman = `[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"500.00"},"creditorName":"Load Test GmbH","creditorAccount":{"iban":"DE89370400440532013000"},"remittanceInformation":"countersign load"}]`
)

// Details returns the authorization_details a flow of sc sends.
func (sc Scenario) Details() string {
	if sc == Human {
		return DetailsHuman
	}
	return DetailsAuto
}

// flowsRun tells this process's flows from another run's on the same server.
var flowsRun = rand.Text()[:8]

// DetailsFor returns the authorization_details flow i of sc sends: a human
// flow's are its own (its remittance information names the flow), since
// the server joins identical pending requests into one.
func (sc Scenario) DetailsFor(i int) string {
	if sc == Human {
		return strings.Replace(DetailsHuman, `"countersign load"`, `"countersign load `+flowsRun+` `+strconv.Itoa(i)+`"`, 1)
	}
	return DetailsAuto
}

// Client is a registered client's credentials.
type Client struct {
	ID, Secret string
	// Post sends them in the form (client_secret_post) rather than with
	// HTTP Basic.
	Post bool
}

// User is a user requests are made for: the login_hint that names them and
// their id, which the simulated approver reviews as.
type User struct {
	Hint, ID string
}

// Config is one load run.
type Config struct {
	BaseURL     string // the server, on loopback
	Scenario    Scenario
	Delivery    string // human: DeliveryPoll or DeliveryPing
	Concurrency int    // flows in flight at once
	Flows       int    // measured flows
	Warmup      int    // flows run first and discarded
	Timeout     time.Duration
	// StatsWait is how long to wait after the warm-up and after the
	// measured flows before reading PostgreSQL's counters, so that the
	// server's backends have flushed theirs: PostgreSQL 15+ backends flush at
	// most once a second, and an idle one within 10 s.
	StatsWait time.Duration

	Agents   []Client // flow i uses Agents[i % len]
	Users    []User   // and Users[i % len]
	RS       Client   // redeems (auto-redeem)
	Audience string   // the resource server's audience, sent as resource (RFC 8707)

	// Review approves a request as its user (human): the simulated
	// approver, approvals.Service.Review.
	Review func(ctx context.Context, requestID, userID string) error
	// Pings receives the ping callbacks (human with DeliveryPing).
	Pings *Receiver
	// PingWait bounds the wait for one ping (default 30 s).
	PingWait time.Duration

	// DB samples PostgreSQL's counters around the measured flows; nil
	// reports none.
	DB *DBProbe
	// ServerPID is the server's process, whose CPU time is read from
	// /proc/PID/stat; 0 reports none.
	ServerPID int

	// Progress, when set, is called about five times a second while flows
	// run.
	Progress func(Progress)
}

// Progress is how far a run has got.
type Progress struct {
	Phase   string // "warm-up" or "measure"
	Done    int    // flows finished in this phase, with or without error
	Total   int
	Errors  int
	Elapsed time.Duration // in this phase
}
