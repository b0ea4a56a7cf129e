/**
 * socketpair(): the connection between the kernel's nbd driver and cowdisk's server. One end goes
 * to the kernel as a raw descriptor, the other becomes a net.Socket the server reads and writes.
 * Here a net.Socket on each end stands in for both sides: bytes cross both ways, in order, and
 * closing one end is seen at the other.
 */
import { closeSync, openSync, readFileSync } from 'node:fs';
import * as net from 'node:net';
import { expect, test } from 'vitest';
import { addon } from './addon.js';

function socketOn(fd: number): net.Socket {
  return new net.Socket({ fd, readable: true, writable: true });
}

function receive(socket: net.Socket, length: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      got += chunk.length;
      if (got >= length) {
        socket.off('data', onData);
        resolve(Buffer.concat(chunks));
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
}

test('socketpair returns two distinct close-on-exec descriptors', () => {
  const [a, b] = addon().socketpair();
  try {
    expect(a).not.toBe(b);
    for (const fd of [a, b]) {
      // /proc/self/fdinfo shows the open flags in octal; O_CLOEXEC is 02000000.
      const flags = parseInt(/flags:\s+(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1], 8);
      expect(flags & 0o2000000).toBe(0o2000000);
    }
  } finally {
    socketOn(a).destroy();
    socketOn(b).destroy();
  }
});

test('a socketpair carries bytes both ways, in order, between net.Sockets on its ends', async () => {
  const [a, b] = addon().socketpair();
  const left = socketOn(a);
  const right = socketOn(b);
  try {
    const request = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < request.length; i++) request[i] = (i * 7 + (i >> 12)) & 0xff;
    const arriving = receive(right, request.length);
    left.write(request);
    expect((await arriving).equals(request)).toBe(true);

    const reply = Buffer.from('reply from the server side');
    const back = receive(left, reply.length);
    right.write(reply);
    expect((await back).equals(reply)).toBe(true);
  } finally {
    left.destroy();
    right.destroy();
  }
});

test('closing one end of a socketpair ends the other', async () => {
  const [a, b] = addon().socketpair();
  const left = socketOn(a);
  const right = socketOn(b);
  const ended = new Promise<void>((resolve) => right.once('end', () => resolve()));
  right.resume();
  left.end();
  await ended;
  right.destroy();
  left.destroy();
});

test('setSendBuffer grows a Unix socket\'s send buffer as far as wmem_max allows, and says no to a file', async () => {
  const [a, b] = addon().socketpair();
  const left = socketOn(a);
  const right = socketOn(b);
  try {
    const wmemMax = Number(readFileSync('/proc/sys/net/core/wmem_max', 'utf8'));
    const wmemDefault = Number(readFileSync('/proc/sys/net/core/wmem_default', 'utf8'));
    const want = 1024 * 1024;
    const granted = addon().setSendBuffer(a, want);
    // Linux doubles the request (for its own bookkeeping) after capping it at wmem_max.
    expect(granted).toBe(2 * Math.min(want, wmemMax));
    expect(granted).toBeGreaterThan(wmemDefault);
    // The socket still carries a reply larger than the default buffer.
    const reply = Buffer.alloc(768 * 1024, 7);
    const back = receive(right, reply.length);
    left.write(reply);
    expect((await back).equals(reply)).toBe(true);
  } finally {
    left.destroy();
    right.destroy();
  }
  const fd = openSync('/proc/self/stat', 'r');
  try {
    expect(addon().setSendBuffer(fd, 4096)).toBe(-1);
  } finally {
    closeSync(fd);
  }
});
