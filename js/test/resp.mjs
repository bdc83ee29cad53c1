// A minimal Redis client (RESP2 over TCP) for the browser tests: they read
// what the module wrote, without a dependency.
//
//   const r = await connect(6379);
//   await r.cmd('HGETALL', key);   // strings, numbers, null, arrays
//   r.close();
import net from 'node:net';

export function connect(port, host = '127.0.0.1') {
    return new Promise((resolve, reject) => {
        const sock = net.createConnection({ port, host });
        let buf = Buffer.alloc(0);
        const waiting = [];

        // one reply from buf at offset i: [value, next offset] or null
        const parse = (i) => {
            const eol = buf.indexOf('\r\n', i);
            if (eol < 0) return null;
            const type = String.fromCharCode(buf[i]);
            const line = buf.toString('utf8', i + 1, eol);
            const next = eol + 2;
            if (type === '+') return [line, next];
            if (type === '-') return [new Error(line), next];
            if (type === ':') return [Number(line), next];
            if (type === '$') {
                const n = Number(line);
                if (n < 0) return [null, next];
                if (buf.length < next + n + 2) return null;
                return [buf.toString('utf8', next, next + n), next + n + 2];
            }
            if (type === '*') {
                const n = Number(line);
                if (n < 0) return [null, next];
                const a = [];
                let j = next;
                for (let k = 0; k < n; k++) {
                    const r = parse(j);
                    if (!r) return null;
                    a.push(r[0]);
                    j = r[1];
                }
                return [a, j];
            }
            throw new Error(`redis: bad reply type ${type}`);
        };

        sock.on('data', (d) => {
            buf = Buffer.concat([buf, d]);
            for (;;) {
                if (!waiting.length) break;
                const r = parse(0);
                if (!r) break;
                buf = buf.subarray(r[1]);
                const w = waiting.shift();
                if (r[0] instanceof Error) w.reject(r[0]);
                else w.resolve(r[0]);
            }
        });
        sock.on('error', (e) => {
            reject(e);
            while (waiting.length) waiting.shift().reject(e);
        });
        sock.on('connect', () => resolve({
            cmd(...args) {
                let req = `*${args.length}\r\n`;
                for (const a of args) {
                    const s = String(a);
                    req += `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
                }
                return new Promise((ok, ko) => {
                    waiting.push({ resolve: ok, reject: ko });
                    sock.write(req);
                });
            },
            close() { sock.end(); },
        }));
    });
}
