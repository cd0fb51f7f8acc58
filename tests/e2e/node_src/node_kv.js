// node_kv: a key-value server on Node's net module speaking the part of RESP
// (the redis protocol) that tests/e2e/jepsen_client.py uses: SET, GET, INCR,
// DBSIZE, PING; pipelined commands are answered in order.  What the ptrace
// backend must record, replay and take live here is Node itself: V8, libuv's
// event loop and the runtime's threads (tests/e2e/test_ptrace_failover.py node).
//
//   node node_kv.js PORT [BIND_ADDRESS]
'use strict';
const net = require('net');

const data = new Map();

// One command from buf at off: [args, next offset], or null if incomplete.
function parse(buf, off) {
  const line = (from) => {
    const end = buf.indexOf('\r\n', from);
    return end < 0 ? null : [buf.toString('latin1', from, end), end + 2];
  };
  const head = line(off);
  if (head === null) return null;
  if (head[0][0] !== '*') throw new Error('protocol error');
  const n = Number(head[0].slice(1));
  if (!(n >= 1 && n <= 8)) throw new Error('protocol error');
  let at = head[1];
  const args = [];
  for (let i = 0; i < n; i++) {
    const h = line(at);
    if (h === null) return null;
    if (h[0][0] !== '$') throw new Error('protocol error');
    const len = Number(h[0].slice(1));
    if (!(len >= 0 && len <= 1 << 20)) throw new Error('protocol error');
    if (buf.length < h[1] + len + 2) return null;
    args.push(buf.toString('latin1', h[1], h[1] + len));
    at = h[1] + len + 2;
  }
  return [args, at];
}

function answer(args) {
  const cmd = args[0].toUpperCase();
  if (cmd === 'SET' && args.length === 3) {
    data.set(args[1], args[2]);
    return '+OK\r\n';
  }
  if (cmd === 'GET' && args.length === 2) {
    const v = data.get(args[1]);
    return v === undefined ? '$-1\r\n' : `$${Buffer.byteLength(v, 'latin1')}\r\n${v}\r\n`;
  }
  if (cmd === 'INCR' && args.length === 2) {
    const n = (Number(data.get(args[1]) || '0') + 1).toString();
    data.set(args[1], n);
    return `:${n}\r\n`;
  }
  if (cmd === 'DBSIZE') return `:${data.size}\r\n`;
  if (cmd === 'PING') return '+PONG\r\n';
  return `-ERR unknown command '${args[0]}'\r\n`;
}

const server = net.createServer((sock) => {
  let pending = Buffer.alloc(0);
  sock.on('data', (chunk) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    let off = 0;
    const out = [];
    try {
      for (let c; (c = parse(pending, off)) !== null; off = c[1]) out.push(answer(c[0]));
    } catch (e) {
      sock.end('-ERR protocol error\r\n');
      return;
    }
    pending = pending.subarray(off);
    if (out.length) sock.write(out.join(''), 'latin1');
  });
  sock.on('error', () => {});
});
server.listen(Number(process.argv[2]), process.argv[3] || '0.0.0.0', () => {
  console.log(`node_kv: listening on port ${process.argv[2]}`);
});
