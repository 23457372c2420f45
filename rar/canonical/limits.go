package canonical

// Limits on one authorization_details value. They bound the work an agent can
// make the server do before anything is validated, and keep the consent page
// readable. The size limit counts the raw request bytes, whitespace included.
//
// Depth counts nested containers (arrays and objects); the outer array is
// depth 1, an element object depth 2, an object inside an element depth 3.
// Scalars add no depth. A value exactly at a limit is accepted.
const (
	MaxElements = 16       // elements in the outer array
	MaxBytes    = 16 << 10 // bytes of JSON input
	MaxDepth    = 8        // nesting of arrays and objects, outer array = 1
)
