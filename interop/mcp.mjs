// An MCP client this project did not write — the official TypeScript SDK —
// driving examples/mcp-server over streamable HTTP; run by
// examples/mcp-server's TestTypeScriptClient. Each event is one JSON line
// on stdout.
//
//   node mcp.mjs elicit   declares URL-mode elicitation: the human-approved
//                         transfer arrives as elicitation/create, then
//                         notifications/elicitation/complete
//   node mcp.mjs plain    declares no elicitation: the human-approved
//                         transfer is a tool error with the approval URL;
//                         the script calls again after a line on stdin
//   node mcp.mjs stateless
//                         declares URL-mode elicitation against a stateless
//                         server: the human-approved transfer is error
//                         -32042 listing the elicitation; the script calls
//                         again after a line on stdin
//
// Environment: MCP_URL (the /mcp endpoint), SMALL and LARGE (amounts in EUR).
import { createInterface } from 'node:readline';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ElicitRequestSchema, ElicitationCompleteNotificationSchema } from '@modelcontextprotocol/sdk/types.js';

const mode = process.argv[2];
const emit = (event, fields) => process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

const capabilities = mode !== 'plain' ? { elicitation: { url: {} } } : {};
const client = new Client({ name: 'countersign-interop', version: '1.0.0' }, { capabilities });
if (mode === 'elicit') {
  client.setRequestHandler(ElicitRequestSchema, async (req) => {
    const { mode, url, elicitationId, message } = req.params;
    emit('elicitation', { mode, url, elicitationId, message });
    return { action: 'accept' };
  });
  client.setNotificationHandler(ElicitationCompleteNotificationSchema, async (n) => {
    emit('complete', { elicitationId: n.params.elicitationId });
  });
}

const transport = new StreamableHTTPClientTransport(new URL(process.env.MCP_URL));
await client.connect(transport);
emit('connected', { protocolVersion: transport.protocolVersion, server: client.getServerVersion() });

const tools = await client.listTools();
emit('tools', { names: tools.tools.map((t) => t.name).sort() });

const text = (res) => res.content.filter((c) => c.type === 'text').map((c) => c.text).join('');
const call = async (event, name, args) => {
  try {
    const res = await client.callTool({ name, arguments: args });
    emit(event, { isError: res.isError === true, text: text(res), structured: res.structuredContent ?? null });
  } catch (err) {
    emit(event, { error: String(err?.message ?? err), code: err?.code ?? null, data: err?.data ?? null });
  }
};
const transfer = (amount) => ({
  amount, currency: 'EUR', creditor_name: 'ACME Supplies GmbH', creditor_iban: 'DE89370400440532013000', reference: 'Invoice 4711',
});

await call('balance', 'get_balance', {});
await call('small', 'transfer_funds', transfer(process.env.SMALL));
await call('large', 'transfer_funds', transfer(process.env.LARGE));
if (mode === 'plain' || mode === 'stateless') {
  await lines.next(); // the test approved
  await call('retry', 'transfer_funds', transfer(process.env.LARGE));
}
await call('balance', 'get_balance', {});
await client.close();
emit('done', {});
process.exit(0);
