package policy

import (
	"encoding/json"
	"reflect"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"cel.dev/cel-go/ext"

	"github.com/countersign/countersign/rar"
)

// newEnv builds the CEL environment every rule is compiled in. Building it
// takes milliseconds, so it is built once and shared (an Env is safe for
// concurrent use).
var newEnv = sync.OnceValues(func() (*cel.Env, error) {
	opts := []cel.EnvOption{
		ext.NativeTypes(
			reflect.TypeFor[Agent](),
			reflect.TypeFor[User](),
			reflect.TypeFor[Request](),
			reflect.TypeFor[Recent](),
			ext.ParseStructTags(true),
		),
		// Must follow NativeTypes: it wraps the adapter NativeTypes installs.
		func(e *cel.Env) (*cel.Env, error) {
			celAdapter = &jsonAdapter{e.CELTypeAdapter()}
			return cel.CustomTypeAdapter(celAdapter)(e)
		},
		ext.Strings(),
		// Admins write amount(details.instructedAmount) > 10000, a double
		// against an int.
		cel.CrossTypeNumericComparisons(true),
		cel.Variable("details", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("agent", cel.ObjectType("policy.Agent")),
		cel.Variable("user", cel.ObjectType("policy.User")),
		cel.Variable("request", cel.ObjectType("policy.Request")),
		cel.Variable("recent", cel.ObjectType("policy.Recent")),
		// One binding per function rather than per overload: cel-go then
		// skips the run-time signature check, which for a map argument
		// walks the whole map on every call.
		cel.Function("amount",
			cel.Overload("amount_map", []*cel.Type{cel.MapType(cel.StringType, cel.DynType)}, cel.DoubleType),
			cel.Overload("amount_string", []*cel.Type{cel.StringType}, cel.DoubleType),
			cel.SingletonUnaryBinding(amountOf),
		),
		cel.Function("currency",
			cel.Overload("currency_map", []*cel.Type{cel.MapType(cel.StringType, cel.DynType)}, cel.StringType),
			cel.SingletonUnaryBinding(currencyOf),
		),
	}
	return cel.NewEnv(append(opts, leafVariables()...)...)
})

// amountOf implements amount(): an amount object's "amount" in its
// "currency", or a bare decimal string, as a double in major units. Both are
// read by rar's parser, the one that validated the request (rar.ParseAmount,
// rar.ParseDecimal): a sign, an exponent, a number instead of a string, NaN,
// a currency that is not ISO 4217, more decimals than it has or a missing
// field is an evaluation error, which makes the rule fail closed.
func amountOf(v ref.Val) ref.Val {
	if o, ok := v.(*object); ok {
		if o.amount == nil {
			o.amount = amountOfMap(o)
		}
		return o.amount
	}
	if m, ok := v.(traits.Mapper); ok {
		return amountOfMap(m)
	}
	s, ok := v.(types.String)
	if !ok {
		return types.NewErr("amount: want a decimal string, got %s", v.Type().TypeName())
	}
	f, err := rar.ParseDecimal(string(s))
	if err != nil {
		// The value stays out of the message: errors are logged, and
		// authorization_details are not.
		return types.NewErr("amount: %v", err)
	}
	return types.Double(f)
}

// amountOfMap reads an amount object.
func amountOfMap(m traits.Mapper) ref.Val {
	amount, err := stringField(m, types.String("amount"))
	if err != nil {
		return err
	}
	currency, err := stringField(m, types.String("currency"))
	if err != nil {
		return err
	}
	a, perr := rar.ParseAmount(string(amount), string(currency))
	if perr != nil {
		return types.NewErr("amount: %v", perr)
	}
	return types.Double(a.Float64())
}

// stringField reads the string member key of an amount object.
func stringField(m traits.Mapper, key ref.Val) (types.String, ref.Val) {
	f, found := m.Find(key)
	if !found {
		return "", types.NewErr("amount: no field %q", key.Value())
	}
	if types.IsError(f) {
		return "", f
	}
	s, ok := f.(types.String)
	if !ok {
		return "", types.NewErr("amount: %s: want a string, got %s", key.Value(), f.Type().TypeName())
	}
	return s, nil
}

// currencyOf implements currency(): the amount object's "currency" string.
func currencyOf(v ref.Val) ref.Val {
	m, ok := v.(traits.Mapper)
	if !ok {
		return types.NewErr("currency: want an amount object, got %s", v.Type().TypeName())
	}
	c, found := m.Find(types.String("currency"))
	if !found {
		return types.NewErr("currency: no field \"currency\"")
	}
	if _, ok := c.(types.String); !ok && !types.IsError(c) {
		return types.NewErr("currency: want a string, got %s", c.Type().TypeName())
	}
	return c
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// celAdapter is the adapter of the environment: set once by newEnv.
var celAdapter types.Adapter

// jsonAdapter adapts decoded JSON to CEL. rar decodes numbers as
// json.Number, which cel-go does not know: an integer literal becomes a CEL
// int, anything else a double. Maps and lists are wrapped with this adapter
// so that their members are adapted the same way when read.
//
// It is used by pointer: as a value, every map it wraps would copy it into a
// new interface value, an allocation per read.
type jsonAdapter struct{ next types.Adapter }

func (a *jsonAdapter) NativeToValue(v any) ref.Val {
	switch v := v.(type) {
	case ref.Val:
		return v
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return types.Int(i)
		}
		f, err := v.Float64()
		if err != nil {
			return types.NewErr("invalid JSON number")
		}
		return types.Double(f)
	case map[string]any:
		return types.NewStringInterfaceMap(a, v)
	case []any:
		return types.NewDynamicList(a, v)
	}
	return a.next.NativeToValue(v)
}
