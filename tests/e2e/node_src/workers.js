// Four worker_threads post running sums to the main thread, which prints
// them in arrival order with values only the recording knows (the clock,
// Math.random, crypto bytes): the replay must print the same.
'use strict';
const { Worker, isMainThread, parentPort, workerData } = require('worker_threads');
const crypto = require('crypto');

if (isMainThread) {
  const n = 4;
  const got = [];
  let done = 0;
  const t0 = Date.now();
  for (let i = 0; i < n; i++) {
    const w = new Worker(__filename, { workerData: i });
    w.on('message', (m) => got.push(`${i}:${m}`));
    w.on('exit', () => {
      if (++done < n) return;
      console.log(`t0=${t0} rand=${Math.random().toFixed(12)} bytes=${crypto.randomBytes(8).toString('hex')}`);
      console.log(`order ${got.join(' ')}`);
    });
  }
} else {
  let s = workerData;
  for (let k = 0; k < 3000; k++) {
    s = (s * 31 + k) % 1000003;
    if (k % 300 === 0) parentPort.postMessage(`${s}@${Date.now() % 100000}`);
  }
  parentPort.postMessage(s);
}
