package approvals

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the domain's Prometheus metrics. A nil *Metrics counts
// nothing.
type Metrics struct {
	decisions      *prometheus.CounterVec
	reviews        *prometheus.CounterVec
	tokensIssued   prometheus.Counter
	tokensRedeemed prometheus.Counter
}

// NewMetrics registers the domain's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_decisions_total", Help: "Requests admitted, by what the risk policy decided and the deciding rule.",
		}, []string{"outcome", "rule"}),
		reviews: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_reviews_total", Help: "Reviews recorded, by verdict and the request's state after it.",
		}, []string{"verdict", "state"}),
		tokensIssued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "countersign_tokens_issued_total", Help: "Single-transaction tokens issued.",
		}),
		tokensRedeemed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "countersign_tokens_redeemed_total", Help: "Single-transaction tokens redeemed.",
		}),
	}
	reg.MustRegister(m.decisions, m.reviews, m.tokensIssued, m.tokensRedeemed)
	return m
}

func (m *Metrics) decided(r Request) {
	if m != nil {
		m.decisions.WithLabelValues(r.Outcome, r.PolicyRule).Inc()
	}
}

func (m *Metrics) reviewed(v Verdict, r Request) {
	if m != nil {
		m.reviews.WithLabelValues(string(v), string(r.State)).Inc()
	}
}

func (m *Metrics) issued() {
	if m != nil {
		m.tokensIssued.Inc()
	}
}

func (m *Metrics) redeemed() {
	if m != nil {
		m.tokensRedeemed.Inc()
	}
}
