/**
 * Object storage on another origin, standing in for the S3 bucket or CDN a registry redirects
 * blob downloads to: node:http on 127.0.0.1 serving the objects a test puts in it, and recording
 * the headers of every request it gets, so a test can see what followed the redirect there.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface TestObjectStore {
  readonly origin: string;
  readonly objects: Map<string, Buffer>;
  readonly requests: { path: string; headers: http.IncomingHttpHeaders }[];
  close(): Promise<void>;
}

export async function startObjectStore(): Promise<TestObjectStore> {
  const objects = new Map<string, Buffer>();
  const requests: TestObjectStore['requests'] = [];
  const server = http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
    requests.push({ path, headers: { ...req.headers } });
    const object = objects.get(path);
    if (object === undefined) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': object.length }).end(req.method === 'HEAD' ? undefined : object);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    objects,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
