// Three workers race on one shared counter with Atomics.add and hash the
// values they drew; they hand over through Atomics.wait / notify as well.
// Which worker drew which values is decided by the thread order alone.
'use strict';
const { Worker, isMainThread, workerData } = require('worker_threads');

if (isMainThread) {
  const n = 3;
  const sab = new SharedArrayBuffer(4 * 8);
  const a = new Int32Array(sab);
  let done = 0;
  for (let i = 0; i < n; i++) {
    const w = new Worker(__filename, { workerData: { sab, i, n } });
    w.on('exit', () => {
      if (++done === n) console.log(`counter=${a[0]} hashes=${Array.from(a.slice(2, 2 + n)).join(',')} now=${Date.now()}`);
    });
  }
} else {
  const { sab, i, n } = workerData;
  const a = new Int32Array(sab);
  let h = 0;
  for (let round = 0; round < 20; round++) {
    for (let k = 0; k < 500; k++) h = (h * 33 + Atomics.add(a, 0, 1)) | 0;
    // a baton: wait for our turn, pass it on
    while (Atomics.load(a, 1) % n !== i) Atomics.wait(a, 1, Atomics.load(a, 1), 50);
    Atomics.add(a, 1, 1);
    Atomics.notify(a, 1);
  }
  a[2 + i] = h;
}
