package main

import (
	"context"
	"fmt"
	"math/big"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/countersign/countersign/mcpgate"
)

// transferArgs are the arguments of transfer_funds.
type transferArgs struct {
	Amount       string `json:"amount" jsonschema:"the amount, a decimal string such as 250.00"`
	Currency     string `json:"currency" jsonschema:"the currency, ISO 4217, such as EUR"`
	CreditorName string `json:"creditor_name" jsonschema:"who is paid"`
	CreditorIBAN string `json:"creditor_iban" jsonschema:"the creditor's IBAN"`
	Reference    string `json:"reference,omitempty" jsonschema:"the remittance information, such as an invoice number"`
}

// details are the transfer as one payment_initiation element (RFC 9396 §2),
// the demo type of examples/demo/types.
func (a transferArgs) details() []map[string]any {
	d := map[string]any{
		"type":             "payment_initiation",
		"instructedAmount": map[string]string{"currency": a.Currency, "amount": a.Amount},
		"creditorName":     a.CreditorName,
		"creditorAccount":  map[string]string{"iban": a.CreditorIBAN},
	}
	if a.Reference != "" {
		d["remittanceInformation"] = a.Reference
	}
	return []map[string]any{d}
}

type transferResult struct {
	Transaction string `json:"transaction" jsonschema:"the Countersign request that approved the transfer"`
	Balance     string `json:"balance" jsonschema:"the balance after the transfer"`
}

type balanceResult struct {
	Balance  string `json:"balance"`
	Currency string `json:"currency"`
}

// account is the demo account the tools work on, in EUR.
type account struct {
	mu      sync.Mutex
	balance *big.Rat
}

func newAccount(opening string) (*account, error) {
	b, ok := new(big.Rat).SetString(opening)
	if !ok {
		return nil, fmt.Errorf("--balance %q is not a decimal number", opening)
	}
	return &account{balance: b}, nil
}

func (a *account) get() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.balance.FloatString(2)
}

func (a *account) debit(amount string) (string, error) {
	v, ok := new(big.Rat).SetString(amount)
	if !ok {
		return "", fmt.Errorf("amount %q is not a decimal number", amount)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.balance.Sub(a.balance, v)
	return a.balance.FloatString(2), nil
}

// newServer is the MCP server with its two tools.
func newServer(gate *mcpgate.Gate, acct *account) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "countersign-example-mcp-server", Version: "1.0.0"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "get_balance", Description: "Returns the account's balance."},
		func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, balanceResult, error) {
			return nil, balanceResult{Balance: acct.get(), Currency: "EUR"}, nil
		})
	mcpgate.AddTool(s, &mcp.Tool{Name: "transfer_funds",
		Description: "Transfers money from the account to a creditor. Countersign asks the account holder to approve transfers that policy does not allow at once."},
		gate, mcpgate.Tool[transferArgs]{
			Details: func(_ context.Context, a transferArgs) (any, error) { return a.details(), nil },
			Summary: func(a transferArgs) string {
				return fmt.Sprintf("transfer %s %s to %s (%s)", a.Amount, a.Currency, a.CreditorName, a.CreditorIBAN)
			},
		},
		func(ctx context.Context, _ *mcp.CallToolRequest, a transferArgs) (*mcp.CallToolResult, transferResult, error) {
			claims, _ := mcpgate.ClaimsFromContext(ctx)
			if a.Currency != "EUR" {
				// Approved and redeemed, but this demo account holds EUR only.
				return nil, transferResult{}, fmt.Errorf("the account holds EUR only; %s transfers are not executed", a.Currency)
			}
			bal, err := acct.debit(a.Amount)
			if err != nil {
				return nil, transferResult{}, err
			}
			return nil, transferResult{Transaction: claims.Txn, Balance: bal}, nil
		})
	return s
}
