package rar

import (
	"errors"
	"strconv"
	"strings"
)

// parsePointer splits a JSON pointer (RFC 6901 §3) into unescaped tokens.
func parsePointer(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	if p[0] != '/' {
		return nil, errors.New("rar: JSON pointer must start with '/'")
	}
	tokens := strings.Split(p[1:], "/")
	for i, t := range tokens {
		if strings.Contains(strings.ReplaceAll(strings.ReplaceAll(t, "~0", ""), "~1", ""), "~") {
			return nil, errors.New("rar: invalid '~' escape in JSON pointer")
		}
		tokens[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return tokens, nil
}

// lookupPointer resolves parsed pointer tokens (RFC 6901 §4) in a decoded
// value.
func lookupPointer(v any, tokens []string) (any, bool) {
	for _, t := range tokens {
		switch c := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = c[t]; !ok {
				return nil, false
			}
		case []any:
			n, err := strconv.Atoi(t)
			if err != nil || n < 0 || n >= len(c) || (len(t) > 1 && t[0] == '0') {
				return nil, false
			}
			v = c[n]
		default:
			return nil, false
		}
	}
	return v, true
}
