package policy

import (
	"reflect"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// object is one JSON object of the element being evaluated, as CEL sees it.
// Rules read the same few members again and again (the instructed amount is
// typically read by several rules, each through amount() or currency()), so
// an object converts a member to its CEL value on first read and hands out
// that value for the rest of the evaluation, and remembers what amount()
// made of it. Objects belong to one evaluation's activation, which reuses
// them, so reading a nested object allocates nothing.
//
// Find and FindStringKey (the interpreter's fast path) are implemented here;
// the operations rules rarely use — iteration, equality, conversion — are
// delegated to cel-go's own map over the same Go map.
type object struct {
	m    map[string]any
	act  *activation
	seen []member
	// amount is what amount() returned for this object, nil until asked.
	amount ref.Val
}

type member struct {
	key string
	val ref.Val
}

var (
	_ traits.Mapper = (*object)(nil)
	_ ref.Val       = (*object)(nil)
)

// FindStringKey is what cel-go's interpreter looks for before falling back
// to Find: a member by name, with no key conversion.
func (o *object) FindStringKey(key string) (any, bool) {
	for i := range o.seen {
		if o.seen[i].key == key {
			return o.seen[i].val, true
		}
	}
	v, ok := o.m[key]
	if !ok {
		return nil, false
	}
	val := o.act.NativeToValue(v)
	o.seen = append(o.seen, member{key, val})
	return val, true
}

func (o *object) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		// JSON objects have string keys only: another key is absent, as in
		// cel-go's own maps after a failed key conversion.
		return nil, false
	}
	v, found := o.FindStringKey(string(k))
	if !found {
		return nil, false
	}
	return v.(ref.Val), true
}

func (o *object) Contains(key ref.Val) ref.Val {
	_, found := o.Find(key)
	return types.Bool(found)
}

func (o *object) Get(key ref.Val) ref.Val {
	v, found := o.Find(key)
	if !found {
		return types.NewErr("no such key: %v", key)
	}
	return v
}

func (o *object) Size() ref.Val { return types.Int(len(o.m)) }

// generic is cel-go's own map over the object, for the rest.
func (o *object) generic() traits.Mapper {
	return types.NewStringInterfaceMap(o.act, o.m)
}

func (o *object) Iterator() traits.Iterator { return o.generic().Iterator() }

func (o *object) Equal(other ref.Val) ref.Val { return o.generic().Equal(other) }

func (o *object) ConvertToNative(t reflect.Type) (any, error) {
	return o.generic().ConvertToNative(t)
}

func (o *object) ConvertToType(t ref.Type) ref.Val { return o.generic().ConvertToType(t) }

func (o *object) Type() ref.Type { return types.MapType }

func (o *object) Value() any { return o.m }

// NativeToValue makes the activation the adapter of the element's lists, so
// that objects inside lists are objects of this evaluation too.
func (a *activation) NativeToValue(v any) ref.Val {
	switch v := v.(type) {
	case ref.Val:
		return v
	case string:
		return types.String(v)
	case map[string]any:
		return a.object(v)
	case []any:
		return types.NewDynamicList(a, v)
	}
	return celAdapter.NativeToValue(v) // json.Number and the rest
}

// object returns an object of this evaluation over m.
func (a *activation) object(m map[string]any) *object {
	if a.used == len(a.objects) {
		a.objects = append(a.objects, &object{act: a})
	}
	o := a.objects[a.used]
	a.used++
	o.m = m
	return o
}

// release forgets the evaluation's values, keeping the objects' memory for
// the next one.
func (a *activation) release() {
	for _, o := range a.objects[:a.used] {
		clear(o.seen)
		o.seen = o.seen[:0]
		o.m = nil
		o.amount = nil
	}
	a.used = 0
}
