// An HTTP server on 127.0.0.1:PORT that counts requests and answers each
// with its number, the clock and a random token; prints "listening", and on
// SIGTERM the number served, then closes.
'use strict';
const http = require('http');
const crypto = require('crypto');
let n = 0;
const srv = http.createServer((req, res) => {
  n++;
  res.end(`${req.url} #${n} at ${Date.now()} token ${crypto.randomBytes(4).toString('hex')}\n`);
});
srv.listen(Number(process.argv[2]), '127.0.0.1', () => console.log('listening'));
process.on('SIGTERM', () => {
  console.log(`served ${n}`);
  srv.close();
});
