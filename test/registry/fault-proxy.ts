/**
 * A reverse proxy in front of a test registry, standing in for the CDN, load balancer or
 * corporate proxy a real client meets: node:http on 127.0.0.1 that forwards every request to the
 * registry (keeping the Host header, so the registry's upload Locations point back through the
 * proxy), counts the requests and the response bytes it forwards, records each request's
 * headers, and can be told to misbehave:
 * - `fail`: answer the next N matching requests with a status (503, 429, 404) itself;
 * - `reset`: cut the connection of the next N matching requests without an answer;
 * - `delayMs`: wait before forwarding;
 * - `corrupt`: flip one byte in the bodies of matching responses;
 * - `ignoreRange`: drop the Range header, so the registry answers 200 with the whole blob;
 * - `shiftRange`: ask the registry for the range one byte later than the client asked;
 * - `redirect`: answer matching requests with a redirect to another origin (object storage);
 * - `hang`: never answer matching requests (the client waits, or is killed while it waits).
 * Faults are changed between tests through the `faults` object.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export type Match = (request: { method: string; path: string }) => boolean;

export interface Faults {
  fail?: { count: number; status: number; match?: Match };
  reset?: { count: number; match?: Match };
  delayMs?: number;
  corrupt?: Match;
  ignoreRange?: boolean;
  shiftRange?: boolean;
  redirect?: { to: (path: string) => string; match: Match; status?: number };
  hang?: Match;
}

export interface ProxiedRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  status: number;
}

export interface TestProxy {
  readonly host: string;
  readonly origin: string;
  faults: Faults;
  readonly log: ProxiedRequest[];
  /** Response body bytes forwarded from the registry since the last reset(). */
  bytes: number;
  /** Clears the faults, the log and the byte count. */
  reset(): void;
  close(): Promise<void>;
}

/** Requests for blob contents (not uploads, not manifests). */
export const blobGets: Match = ({ method, path }) => method === 'GET' && /\/blobs\/sha256:/.test(path);
export const any: Match = () => true;

function shifted(range: string): string {
  const m = /^bytes=([0-9]+)-([0-9]+)$/.exec(range);
  return m ? `bytes=${Number(m[1]) + 1}-${Number(m[2]) + 1}` : range;
}

export async function startProxy(upstream: { port: number }): Promise<TestProxy> {
  const state = { faults: {} as Faults, log: [] as ProxiedRequest[], bytes: 0 };
  const take = (fault: { count: number; match?: Match } | undefined, req: { method: string; path: string }): boolean => {
    if (!fault || fault.count <= 0 || !(fault.match ?? any)(req)) return false;
    fault.count--;
    return true;
  };
  const server = http.createServer(async (req, res) => {
    const request = { method: req.method ?? 'GET', path: req.url ?? '/' };
    const entry: ProxiedRequest = { ...request, headers: { ...req.headers }, status: 0 };
    state.log.push(entry);
    const f = state.faults;
    if (take(f.reset, request)) return void req.socket.destroy();
    if (f.hang?.(request)) return;
    if (take(f.fail, request)) {
      entry.status = f.fail!.status;
      res.writeHead(f.fail!.status, { 'content-type': 'application/json', 'retry-after': '0' });
      return void res.end('{"errors":[{"code":"UNAVAILABLE","message":"injected by the test proxy"}]}');
    }
    if (f.redirect && f.redirect.match(request)) {
      entry.status = f.redirect.status ?? 307;
      return void res.writeHead(entry.status, { location: f.redirect.to(request.path) }).end();
    }
    if (f.delayMs) await new Promise((r) => setTimeout(r, f.delayMs));
    const headers = { ...req.headers };
    if (f.ignoreRange) delete headers.range;
    if (f.shiftRange && typeof headers.range === 'string') headers.range = shifted(headers.range);
    const forward = http.request({ host: '127.0.0.1', port: upstream.port, method: req.method, path: req.url, headers }, (answer) => {
      entry.status = answer.statusCode ?? 0;
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      let flipped = !(f.corrupt && f.corrupt(request));
      answer.on('data', (chunk: Buffer) => {
        state.bytes += chunk.length;
        if (!flipped && chunk.length > 0) {
          chunk = Buffer.from(chunk);
          chunk[chunk.length >> 1] ^= 0x01;
          flipped = true;
        }
        res.write(chunk);
      });
      answer.on('end', () => res.end());
      answer.on('error', () => res.destroy());
    });
    forward.on('error', () => res.destroy());
    req.pipe(forward);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    origin: `http://127.0.0.1:${port}`,
    get faults() {
      return state.faults;
    },
    set faults(value: Faults) {
      state.faults = value;
    },
    get log() {
      return state.log;
    },
    get bytes() {
      return state.bytes;
    },
    set bytes(value: number) {
      state.bytes = value;
    },
    reset() {
      state.faults = {};
      state.log.length = 0;
      state.bytes = 0;
    },
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
