/**
 * Starts an in-process NbdServer on a Unix socket in a fresh temporary directory, for tests that
 * drive it with real clients. The server is the same object `cowdisk serve` runs.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { NbdServer, type ExportConfig, type NbdServerOptions } from '../../src/nbd/index.js';

export interface TestServer {
  server: NbdServer;
  dir: string;
  socket: string;
  /** nbd+unix URI of export `name` ("" = default). */
  uri(name?: string): string;
  close(): Promise<void>;
}

export async function startServer(exports: ExportConfig[], options: Partial<NbdServerOptions> = {}): Promise<TestServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowdisk-nbd-'));
  const socket = path.join(dir, 'nbd.sock');
  const server = new NbdServer({ ...options, exports });
  await server.listen({ socket });
  return {
    server,
    dir,
    socket,
    uri: (name = '') => server.uris(name)[0],
    async close() {
      await server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
