/**
 * socketpair(): the connection between the kernel's nbd driver and cowdisk's server. One end goes
 * to the kernel as a raw descriptor, the other becomes a net.Socket the server reads and writes.
 * Here a net.Socket on each end stands in for both sides: bytes cross both ways, in order, and
 * closing one end is seen at the other.
 */
import { readFileSync } from 'node:fs';
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
