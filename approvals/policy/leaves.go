package policy

import (
	"reflect"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
)

// The variables agent, user, request and recent are native structs, and a
// rule could read their fields through them, but cel-go would then resolve
// recent.agent.hour.total.count as the variable recent and four field
// selections by reflection, on every read. Instead every leaf field is also
// declared as a variable of its own, named by its path: cel-go's checker
// resolves a dotted name to the longest declared variable first, so
// recent.agent.hour.total.count is a single lookup in the activation
// ([activation.ResolveName] below). Whole structs (recent.agent.hour) and
// has() still go through the struct variables.

// leafVariables declares a variable for every leaf field under the struct
// variables, named by the fields' cel tags.
func leafVariables() []cel.EnvOption {
	var opts []cel.EnvOption
	for name, t := range map[string]reflect.Type{
		"agent":   reflect.TypeFor[Agent](),
		"user":    reflect.TypeFor[User](),
		"request": reflect.TypeFor[Request](),
		"recent":  reflect.TypeFor[Recent](),
	} {
		for path, typ := range leaves(name, t) {
			opts = append(opts, cel.Variable(path, typ))
		}
	}
	return opts
}

// derived are leaves computed from a struct rather than read from one of its
// fields: defined only while the amounts are in at most one currency, and an
// evaluation error otherwise (see oneCurrency). They are variables but not
// fields, so a rule cannot reach around that error through the struct (as
// [request][0].amount would).
var derived = map[reflect.Type]map[string]*cel.Type{
	reflect.TypeFor[Request](): {"amount": cel.DoubleType, "currency": cel.StringType},
	reflect.TypeFor[Tally]():   {"sum": cel.DoubleType},
}

// leaves maps the path of every non-struct field under t, and of its derived
// leaves, to its CEL type.
func leaves(prefix string, t reflect.Type) map[string]*cel.Type {
	out := map[string]*cel.Type{}
	for name, typ := range derived[t] {
		out[prefix+"."+name] = typ
	}
	for f := range t.Fields() {
		tag := f.Tag.Get("cel")
		if tag == "" {
			continue
		}
		path := prefix + "." + tag
		switch ft := f.Type; {
		case ft.Kind() == reflect.Struct:
			for p, typ := range leaves(path, ft) {
				out[p] = typ
			}
		case ft.Kind() == reflect.String:
			out[path] = cel.StringType
		case ft.Kind() == reflect.Int64:
			out[path] = cel.IntType
		case ft.Kind() == reflect.Float64:
			out[path] = cel.DoubleType
		case ft == reflect.TypeFor[[]string]():
			out[path] = cel.ListType(cel.StringType)
		case ft == reflect.TypeFor[map[string]string]():
			out[path] = cel.MapType(cel.StringType, cel.StringType)
		case ft == reflect.TypeFor[map[string]float64]():
			out[path] = cel.MapType(cel.StringType, cel.DoubleType)
		default:
			panic("policy: no CEL type for field " + path)
		}
	}
	return out
}

// ResolveName supplies the variables, the leaf variables included. Values
// are handed over as CEL values where that saves the interpreter a
// conversion, and as Go values where cel-go reads them directly (a
// map[string]string).
func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "details":
		return a.details, true
	case "agent":
		return &a.in.Agent, true
	case "user":
		return &a.in.User, true
	case "request":
		return &a.in.Request, true
	case "recent":
		return &a.in.Recent, true

	case "agent.id":
		return types.String(a.in.Agent.ID), true
	case "agent.name":
		return types.String(a.in.Agent.Name), true
	case "agent.domain":
		return types.String(a.in.Agent.Domain), true
	case "agent.labels":
		return a.in.Agent.Labels, true

	case "user.id":
		return types.String(a.in.User.ID), true
	case "user.roles":
		return types.NewStringList(celAdapter, a.in.User.Roles), true
	case "user.groups":
		return types.NewStringList(celAdapter, a.in.User.Groups), true

	case "request.binding_message":
		return types.String(a.in.Request.BindingMessage), true
	case "request.acr_values":
		return types.NewStringList(celAdapter, a.in.Request.ACRValues), true
	case "request.requested_expiry":
		return types.Int(a.in.Request.RequestedExpiry), true
	case "request.hour":
		return types.Int(a.in.Request.Hour), true
	case "request.weekday":
		return types.Int(a.in.Request.Weekday), true
	case "request.amounts":
		return a.in.Request.Amounts, true
	case "request.amount":
		return oneCurrency(name, a.in.Request.Amounts, false), true
	case "request.currency":
		return oneCurrency(name, a.in.Request.Amounts, true), true
	case "request.elements":
		return types.Int(a.in.Request.Elements), true
	}
	if path, ok := strings.CutPrefix(name, "recent."); ok {
		return a.in.Recent.resolve(name, path)
	}
	return nil, false
}

// oneCurrency is the sum of the amounts (the currency, with currency set)
// when they are in one currency, 0 ("") when there are none, and an
// evaluation error, which fails closed, when they are in several: SPEC §4,
// amounts of different currencies are never added.
func oneCurrency(name string, sums map[string]float64, currency bool) ref.Val {
	if len(sums) > 1 {
		return types.NewErr("%s is not defined: the amounts are in %d currencies, which are never added", name, len(sums))
	}
	for c, v := range sums {
		if currency {
			return types.String(c)
		}
		return types.Double(v)
	}
	if currency {
		return types.String("")
	}
	return types.Double(0)
}

// resolve reads the leaf at path ("agent.hour.total.count") of the variable
// name ("recent.agent.hour.total.count").
func (r *Recent) resolve(name, path string) (any, bool) {
	who, path, _ := strings.Cut(path, ".")
	var w *Windows
	switch who {
	case "agent":
		w = &r.Agent
	case "user":
		w = &r.User
	default:
		return nil, false
	}
	window, path, _ := strings.Cut(path, ".")
	var c *Counts
	switch window {
	case "hour":
		c = &w.Hour
	case "day":
		c = &w.Day
	default:
		return nil, false
	}
	outcome, field, _ := strings.Cut(path, ".")
	var t *Tally
	switch outcome {
	case "total":
		t = &c.Total
	case "allowed":
		t = &c.Allowed
	case "approved":
		t = &c.Approved
	case "denied":
		t = &c.Denied
	case "pending":
		t = &c.Pending
	default:
		return nil, false
	}
	switch field {
	case "count":
		return types.Int(t.Count), true
	case "sums":
		return t.Sums, true
	case "sum":
		return oneCurrency(name, t.Sums, false), true
	}
	return nil, false
}
