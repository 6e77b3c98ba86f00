// Shared by the web tests: check the installed packages, start `tandem serve` on a free port,
// stop it. Run as: node tests/web/<test>.mjs <tandem binary> <models dir>
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

// Exits when something the test needs is missing: a failure under CI (which installs it all with
// .ci/install-deps), a skip (ctest's code 77) on a developer's machine that lacks it.
export function need(what, present, fix) {
  if (present) return;
  const msg = `${what} is missing; ${fix}`;
  if (process.env.CI) {
    console.error(`error: ${msg} (CI must run these tests, so this is a failure)`);
    process.exit(1);
  }
  console.error(`skipped: ${msg}`);
  process.exit(77);
}

export function requireModules(names) {
  for (const n of names)
    need(`tests/web/node_modules/${n}`, existsSync(join(here, 'node_modules', n)),
            'run `npm ci` in tests/web (.ci/install-deps does)');
}

export function args() {
  const [tandem, models] = process.argv.slice(2);
  if (!tandem || !models) {
    console.error('usage: node tests/web/<test>.mjs <tandem binary> <models dir>');
    process.exit(2);
  }
  return { tandem, models };
}

// Starts `tandem serve --port 0 ...extra` and resolves when its start line names the port.
export function startServer(tandem, extra) {
  return new Promise((resolve, reject) => {
    const child = spawn(tandem, ['serve', '--port', '0', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    const exited = new Promise((res) => child.on('exit', (code, signal) => res(code ?? signal)));
    const timer = setTimeout(() => reject(new Error(`no start line within 60 s; stderr: ${err}`)), 60000);
    child.stderr.on('data', (d) => { err += d; });
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve({
          port: Number(m[1]),
          url: `http://127.0.0.1:${m[1]}`,
          startLine: out.split('\n')[0],
          stderr: () => err,
          // SIGTERM, then the exit code (0 for a clean stop).
          stop: async () => { child.kill('SIGTERM'); return exited; },
        });
      }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`tandem serve exited (${code}): ${err}`)); });
  });
}

// A metric's value from GET /metrics (NaN when absent).
export async function metric(url, name, headers = {}) {
  const text = await (await fetch(`${url}/metrics`, { headers })).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : NaN;
}

// Polls until fn() is true; throws after limitMs.
export async function waitFor(fn, what, limitMs = 60000) {
  const until = Date.now() + limitMs;
  while (Date.now() < until) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}
