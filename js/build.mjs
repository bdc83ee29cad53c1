// Builds src/lifecycle.js into dist/lifecycle.min.js with esbuild and
// checks the size budget (gzipped, as browsers download it).
//
//   node build.mjs           write dist/lifecycle.min.js ("make js")
//   node build.mjs --check   fail unless dist/ is exactly what the source
//                            builds to, within budget ("make test")
//
// The module embeds dist/lifecycle.min.js when it is built, so dist/ is
// committed and the module's build never needs node.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { transform } from 'esbuild';

const BUDGET = 2560; // bytes, gzipped: "under 2.5 KB"

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, 'src', 'lifecycle.js');
const dist = join(here, 'dist', 'lifecycle.min.js');
const check = process.argv.includes('--check');
const rel = (p) => relative(process.cwd(), p) || p;

const { code } = await transform(readFileSync(src, 'utf8'), {
    loader: 'js',
    minify: true,
    target: 'es2020',
    legalComments: 'none',
    charset: 'utf8',
});

const gz = gzipSync(code, { level: 9 }).length;
console.log(`lifecycle.min.js: ${code.length} bytes, ${gz} bytes gzipped ` +
            `(budget ${BUDGET})`);
let failed = false;
if (gz >= BUDGET) {
    console.error(`lifecycle.min.js is over budget: ${gz} >= ${BUDGET} bytes gzipped`);
    failed = true;
}

if (check) {
    let have = null;
    try { have = readFileSync(dist, 'utf8'); } catch { /* missing */ }
    if (have !== code) {
        console.error(`${rel(dist)} is ${have === null ? 'missing' : 'not what ' +
                      rel(src) + ' builds to'}: run "make js" and commit it`);
        failed = true;
    } else {
        console.log(`${rel(dist)} is up to date with ${rel(src)}`);
    }
} else if (!failed) {
    mkdirSync(dirname(dist), { recursive: true });
    writeFileSync(dist, code);
    console.log(`wrote ${rel(dist)}`);
}
process.exit(failed ? 1 : 0);
