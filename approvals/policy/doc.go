// Package policy decides, for each element of an authorization request,
// whether it runs on its own or waits for a human (SPEC §4, the admin's risk
// thresholds). It is pure: it parses and compiles the bytes it is given and
// evaluates inputs the caller gathered; it reads no clock, no database and no
// file.
//
// [ParseFile] reads a policy file, [Compile] turns it into a [Set] of CEL
// programs (cel.dev/cel-go), [Set.Evaluate] decides one element and
// [Combine] folds the elements' decisions and the request's acr_values into
// what the whole request needs.
//
// # Policy files
//
// A policy is YAML with one key, types, mapping each request type to its
// rules in order:
//
//	types:
//	  payment_initiation:
//	    - id: large_payment                          # letters, digits, _ . -; unique per type
//	      when: request.currency != "EUR" || request.amount > 10000   # CEL, must be bool
//	      outcome: step_up
//	      reason: Payments not in EUR or over 10,000 EUR need a passkey  # shown to the user and in the audit trail
//	    - id: payment
//	      when: "true"
//	      outcome: approve
//
// outcome is one of
//
//	allow                  approved at once, no human; the token's acr is urn:countersign:acr:policy
//	approve                the user must approve
//	step_up                the user must approve with a fresh user-verified passkey assertion
//	{quorum: {n: 2, group: maintainers, requester_counts: false}}
//	                       n distinct members of the group must approve; the requesting
//	                       user counts towards n only if requester_counts (default false)
//	deny                   refused with access_denied; needs reason:
//	{deny: "reason"}       the same, with the reason written in the outcome
//
// A rule without when always matches. The reason of a deny is the
// error_description the agent receives. Parsing is strict: unknown or
// duplicate keys, duplicate rule ids, anchors and aliases are errors.
//
// # Deciding
//
// The first rule whose condition holds decides; when none does, or the type
// has no rules, the element is denied with "no rule matched". A condition that
// fails while evaluating (a field the element lacks, a type error, an amount
// that is not a decimal string) counts as a match with the strictest outcome
// the type's rules can reach — deny, then quorum (the largest n), step_up,
// approve — and never allow: a rule set whose rules are all allow fails to
// approve, and a rule set whose last rule is not `when: "true"` (or without
// when) can reach the no-match deny, so it fails to deny. [Decision.Err]
// then says what failed; log it. Use has(details.field) to test for optional
// fields.
//
// A request needs everything its elements need ([Combine]): any deny denies;
// any step_up makes every human approval, quorum members' too, a step-up;
// quorums of different groups must all be met, with the largest n per group
// (the requester counts only if every such element lets them); otherwise
// approve beats allow. acr_values (RFC 9470) only raise the result:
// urn:countersign:acr:step-up acts as one more element deciding step_up,
// urn:countersign:acr:approval as one deciding approve.
//
// # Checks at compile time
//
// Every condition must parse, type-check, have type bool, and cost at most
// [MaxCost] by cel-go's static estimate, taking every string, list and map
// of the input to be as large as rar.MaxBytes. Compile reports every
// problem at once as [Errors]; each [Error] names the file, the type, the
// rule and the line and column in the file (CEL positions are mapped into
// the YAML, for block scalars too). Nothing compiles partially.
//
// # CEL variables
//
// details is one authorization_details element (RFC 9396 §2) as decoded
// JSON, a map(string, dyn): details.type, details.instructedAmount,
// details.operation and so on. Integers are ints, other numbers doubles.
// Ordering compares ints with doubles (amount(…) > 10000); == between a
// double and an int literal does not type-check, so write 12.0. Reading a
// field the element does not have is an evaluation error (see above).
//
// agent is the requesting agent's registration:
//
//	agent.id        string
//	agent.name      string
//	agent.domain    string
//	agent.labels    map(string, string)
//
// user is the user the agent acts for (the CIBA login_hint):
//
//	user.id         string
//	user.roles      list(string)
//	user.groups     list(string)
//
// request is the backchannel authentication request:
//
//	request.binding_message    string
//	request.acr_values         list(string)
//	request.requested_expiry   int, seconds; 0 when absent
//	request.hour               int, 0–23, in the server's time zone
//	request.weekday            int, 0 (Sunday) – 6 (Saturday), in the server's time zone
//	request.amounts            map(string, double): for each currency, the sum of the amounts
//	                           of the request's elements in it (the member each type declares
//	                           as its amount, rar.Type.Amount), added exactly, in major units,
//	                           so that a payment split across elements is seen whole; a
//	                           currency the request has no amount in is absent
//	request.amount             double, the one currency's sum while the request has amounts in
//	                           at most one currency (0 when it has none)
//	request.currency           string, that currency ("" when there is none)
//	request.elements           int, how many elements the request has
//
// Amounts of different currencies are never added (SPEC §4): while a
// request has amounts in several currencies, reading request.amount or
// request.currency is an evaluation error, so the rule fails closed. Rules
// that compare amounts say which currency they mean —
// request.currency == "EUR" && request.amount <= 100, or
// "EUR" in request.amounts && request.amounts["EUR"] > 10000 — and reading
// request.amounts["JPY"] for a request without JPY is an error too.
//
// recent is the velocity of earlier requests of the same request type as the
// element, made by this agent (for any user) or for this user (by any agent),
// over the last hour and the last 24 hours, split by what became of them:
//
//	recent.<who>.<window>.<outcome>.<measure>
//	  who:     agent | user
//	  window:  hour | day
//	  outcome: total     every request in the window, whatever became of it
//	                     (expired and cancelled ones too)
//	           allowed   auto-allowed by a rule
//	           approved  approved by humans
//	           denied    denied by a rule or by a human
//	           pending   still waiting for a human
//	  measure: count     int: requests with at least one element of this type,
//	                     each counted once however many such elements it has
//	           sums      map(string, double): per currency, the sum of those
//	                     requests' request.amounts, added exactly, in major
//	                     units; currencies none of them had are absent
//	           sum       double: the one currency's sum while sums has at most
//	                     one currency (0 when it has none); an evaluation error
//	                     when it has several
//
// e.g. recent.agent.hour.total.count >= 10 or
// "EUR" in recent.user.day.approved.sums && recent.user.day.approved.sums["EUR"] > 50000.
// The paths are checked at compile time. Recent requests exclude the request
// being decided, so "more than 10 payments in the last hour" is
// recent.agent.hour.total.count >= 10.
//
// # CEL functions
//
// The CEL standard library, the strings extension (cel.dev/cel-go/ext:
// lowerAscii, upperAscii, replace, split, trim, indexOf, substring, join,
// format and the others) and:
//
//	amount(map) double     the "amount" of an RFC 9396 amount object in its "currency",
//	                       e.g. amount(details.instructedAmount); "10000.50" is 10000.5
//	amount(string) double  the same for a bare decimal string
//	currency(map) string   the "currency" of an amount object, e.g. "EUR"
//
// amount reads with the parser that validated the request
// (rar.ParseAmount): decimal strings only, digits with an optional
// fraction, no more decimals than the currency has; a sign, an exponent,
// NaN, a JSON number, an unknown currency or a missing field is an
// evaluation error. A type's declared amount and its money fields are
// checked the same way when the request arrives, so such a request is
// refused with invalid_authorization_details before any rule runs.
//
// # Performance
//
// Each type's rules are folded into one program per 32 rules, so evaluating
// 20 rules costs one CEL evaluation, and the variables reach the interpreter
// without copying: BenchmarkEvaluate (20 rules, the last one matching)
// prints the figure.
package policy
