/**
 * The handshake phase: fixed newstyle negotiation, one case per option (as nbdkit's
 * protocol-handshake-newstyle.c is laid out). It reads whole options from the ReceiveBuffer,
 * answers each through `send`, and ends in one of two ways: `go` (NBD_OPT_GO or NBD_OPT_EXPORT_NAME
 * chose an export; the connection enters transmission with the negotiated Session) or `close`.
 * It pauses once on the way with `starttls`: NBD_OPT_STARTTLS was acknowledged, the connection
 * runs the TLS handshake (tls-session.ts), calls `tlsStarted()`, and negotiation goes on inside TLS.
 *
 * TLS, in the spec's terms (its "TLS support" section), by the server's mode:
 * - off (NOTLS): STARTTLS is NBD_REP_ERR_UNSUP; nothing is ever NBD_REP_ERR_TLS_REQD.
 * - on (SELECTIVETLS with no TLS-only export): STARTTLS is accepted once; plaintext clients are
 *   served as before.
 * - require (FORCEDTLS): before TLS, every option but STARTTLS and ABORT is NBD_REP_ERR_TLS_REQD
 *   (its data read and dropped), and NBD_OPT_EXPORT_NAME, which cannot carry an error, closes the
 *   connection. A client that did not set NBD_FLAG_C_FIXED_NEWSTYLE may not start TLS at all, so
 *   it is closed at its flags.
 * Once TLS runs, STARTTLS again is NBD_REP_ERR_INVALID, and what was negotiated before it
 * (structured replies, the metadata context selection) is forgotten, as the spec requires.
 *
 * Nothing here waits for I/O: everything an option needs (export size, flags, block sizes, the list
 * of contexts) is known up front, so the whole phase is synchronous.
 *
 * Hostile input is judged against the spec's own limits before anything is allocated:
 * - unknown client flags close the connection (the spec says MUST);
 * - a bad option magic closes it (framing is lost);
 * - option data longer than MAX_OPTION_DATA is answered NBD_REP_ERR_TOO_BIG and the connection is
 *   closed without reading the data (the spec allows a hard disconnect for a denial of service, and
 *   no valid option comes near the limit: names and queries are at most 4096 bytes each);
 * - names and queries longer than 4096 bytes are NBD_REP_ERR_INVALID (or a close for
 *   NBD_OPT_EXPORT_NAME, which cannot carry an error);
 * - any other malformed option is NBD_REP_ERR_INVALID and negotiation goes on.
 */
import { ClientFlag, Info, Limit, Magic, Opt, Rep, Size, optionName } from './constants.js';
import { blockSizes, transmissionFlags, type ExportConfig } from './exports.js';
import type { ReceiveBuffer } from './framing.js';
import { listContexts, selectContexts, type MetaContext } from './meta-context.js';
import * as R from './option-replies.js';
import type { TlsMode } from './tls-credentials.js';

/** The largest option payload read; larger ones are refused with ERR_TOO_BIG and a disconnect. */
export const MAX_OPTION_DATA = 64 * 1024;

/** What the handshake settled on, and what transmission needs to know. */
export interface Session {
  export: ExportConfig;
  structuredReplies: boolean;
  /** Metadata contexts selected for this export; empty when BLOCK_STATUS is not allowed. */
  contexts: readonly MetaContext[];
  /** The client asked for NBD_INFO_BLOCK_SIZE in NBD_OPT_GO and so promised to obey the minimum. */
  enforceMinimum: boolean;
}

export type HandshakeStep =
  | { kind: 'more' }
  | { kind: 'go'; session: Session }
  | { kind: 'starttls' }
  | { kind: 'close'; reason: string };

export interface HandshakeHost {
  send(message: Buffer): void;
  /** The export a client means by `name` ("" is the default export). */
  findExport(name: string): ExportConfig | undefined;
  /** Every export, for NBD_OPT_LIST. */
  listExports(): readonly ExportConfig[];
  /** The metadata contexts a client may list and select. */
  readonly metaContexts: readonly MetaContext[];
  readonly tlsMode: TlsMode;
}

const MORE: HandshakeStep = { kind: 'more' };
const STARTTLS: HandshakeStep = { kind: 'starttls' };
const KNOWN_CLIENT_FLAGS = ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES;

class InvalidOption extends Error {}

export class Handshake {
  /** The first option refused because TLS is required and was not started (for the server's log). */
  refusedWithoutTls: string | undefined;

  private gotClientFlags = false;
  private fixedNewstyle = false;
  private noZeroes = false;
  private tls = false;
  private structuredReplies = false;
  private selection: { export: ExportConfig; contexts: MetaContext[] } | undefined;

  constructor(private readonly host: HandshakeHost) {}

  /** The server speaks first. */
  greet(): void {
    this.host.send(R.greeting());
  }

  /** Handles every complete option in `rx`; stops at the first step that is not 'more'. */
  consume(rx: ReceiveBuffer): HandshakeStep {
    for (;;) {
      if (!this.gotClientFlags) {
        if (!rx.contiguous(Size.CLIENT_FLAGS)) return MORE;
        const flags = rx.view.readUInt32BE(rx.at);
        rx.consume(Size.CLIENT_FLAGS);
        if ((flags & ~KNOWN_CLIENT_FLAGS) !== 0) {
          return close(`unknown client flags 0x${(flags >>> 0).toString(16)}`);
        }
        this.noZeroes = (flags & ClientFlag.NO_ZEROES) !== 0;
        this.fixedNewstyle = (flags & ClientFlag.FIXED_NEWSTYLE) !== 0;
        this.gotClientFlags = true;
        if (!this.fixedNewstyle && this.host.tlsMode === 'require') {
          this.refusedWithoutTls = 'no NBD_FLAG_C_FIXED_NEWSTYLE';
          return close('the client did not set NBD_FLAG_C_FIXED_NEWSTYLE, so it cannot start TLS, which this server requires');
        }
        continue;
      }
      if (!rx.contiguous(Size.OPTION_HEADER)) return MORE;
      const v = rx.view;
      const at = rx.at;
      if (v.readUInt32BE(at) !== Magic.IHAVEOPT_HI || v.readUInt32BE(at + 4) !== Magic.IHAVEOPT_LO) {
        return close('bad option magic');
      }
      const option = v.readUInt32BE(at + 8);
      const length = v.readUInt32BE(at + 12);
      if (length > MAX_OPTION_DATA) {
        this.host.send(
          R.errorReply(option, Rep.ERR_TOO_BIG, `${optionName(option)}: ${length} bytes of option data is over the limit of ${MAX_OPTION_DATA}`),
        );
        return close(`option data of ${length} bytes`);
      }
      if (rx.length < Size.OPTION_HEADER + length) return MORE;
      rx.consume(Size.OPTION_HEADER);
      let data: Buffer = EMPTY;
      if (length > 0) {
        rx.contiguous(length);
        data = rx.view.subarray(rx.at, rx.at + length);
        rx.consume(length);
      }
      if (this.host.tlsMode === 'require' && !this.tls && option !== Opt.STARTTLS && option !== Opt.ABORT) {
        this.refusedWithoutTls ??= optionName(option);
        if (option === Opt.EXPORT_NAME) return close('NBD_OPT_EXPORT_NAME before TLS, which this server requires');
        this.host.send(
          R.errorReply(option, Rep.ERR_TLS_REQD, `${optionName(option)}: this server requires TLS; send NBD_OPT_STARTTLS first (an nbds:// URI for libnbd tools, tls-creds for QEMU)`),
        );
        continue;
      }
      let step: HandshakeStep;
      try {
        step = this.option(option, data);
      } catch (err) {
        if (!(err instanceof InvalidOption)) throw err;
        this.host.send(R.errorReply(option, Rep.ERR_INVALID, `${optionName(option)}: ${err.message}`));
        step = MORE;
      }
      if (step.kind !== 'more') return step;
    }
  }

  private option(option: number, data: Buffer): HandshakeStep {
    const send = (m: Buffer): void => this.host.send(m);
    switch (option) {
      case Opt.EXPORT_NAME: {
        if (data.length > Limit.STRING) return close('export name over 4096 bytes');
        const name = data.toString('utf8');
        const exp = this.host.findExport(name);
        if (!exp) return close(`no export named ${JSON.stringify(name)}`);
        const flags = transmissionFlags(exp, { structuredReplies: this.structuredReplies });
        send(R.exportNameReply(exp.device.size, flags, this.noZeroes));
        return { kind: 'go', session: this.session(exp, false) };
      }
      case Opt.ABORT:
        send(R.optionReply(option, Rep.ACK));
        return close('client sent NBD_OPT_ABORT');
      case Opt.LIST:
        if (data.length !== 0) throw new InvalidOption('takes no data');
        for (const exp of this.host.listExports()) send(R.serverReply(option, exp.name, exp.description ?? ''));
        send(R.optionReply(option, Rep.ACK));
        return MORE;
      case Opt.STARTTLS:
        if (data.length !== 0) throw new InvalidOption('takes no data');
        if (this.host.tlsMode === 'off') {
          send(R.errorReply(option, Rep.ERR_UNSUP, 'this cowdisk server was started without TLS (cowdisk serve --tls on|require with --tls-psk or --tls-certificates)'));
          return MORE;
        }
        if (!this.fixedNewstyle) {
          send(R.errorReply(option, Rep.ERR_POLICY, 'TLS needs fixed newstyle negotiation: set NBD_FLAG_C_FIXED_NEWSTYLE'));
          return MORE;
        }
        if (this.tls) throw new InvalidOption('TLS is already running on this connection');
        send(R.optionReply(option, Rep.ACK));
        return STARTTLS;
      case Opt.INFO:
      case Opt.GO:
        return this.info(option, data);
      case Opt.STRUCTURED_REPLY:
        if (data.length !== 0) throw new InvalidOption('takes no data');
        this.structuredReplies = true;
        send(R.optionReply(option, Rep.ACK));
        return MORE;
      case Opt.LIST_META_CONTEXT:
      case Opt.SET_META_CONTEXT:
        return this.metaContext(option, data);
      default:
        send(R.errorReply(option, Rep.ERR_UNSUP, `${optionName(option)} is not supported by cowdisk`));
        return MORE;
    }
  }

  /** NBD_OPT_INFO and NBD_OPT_GO: name length, name, count of info requests, info requests. */
  private info(option: number, data: Buffer): HandshakeStep {
    if (data.length < 6) throw new InvalidOption('shorter than 6 bytes');
    const nameLength = data.readUInt32BE(0);
    if (nameLength > data.length - 6) throw new InvalidOption('name length runs past the option');
    if (nameLength > Limit.STRING) throw new InvalidOption('export name over 4096 bytes');
    const count = data.readUInt16BE(4 + nameLength);
    if (data.length !== 4 + nameLength + 2 + 2 * count) throw new InvalidOption('information request count does not match the length');
    const name = data.toString('utf8', 4, 4 + nameLength);
    const requests = new Set<number>();
    for (let i = 0; i < count; i++) requests.add(data.readUInt16BE(4 + nameLength + 2 + 2 * i));

    const exp = this.host.findExport(name);
    const send = (m: Buffer): void => this.host.send(m);
    if (!exp) {
      send(R.errorReply(option, Rep.ERR_UNKNOWN, `no export named ${JSON.stringify(name)}; NBD_OPT_LIST shows the exports`));
      return MORE;
    }
    send(R.infoExport(option, exp.device.size, transmissionFlags(exp, { structuredReplies: this.structuredReplies })));
    if (requests.has(Info.NAME)) send(R.infoString(option, Info.NAME, exp.name));
    if (requests.has(Info.DESCRIPTION) && exp.description) send(R.infoString(option, Info.DESCRIPTION, exp.description));
    // Sent even when not asked for (the spec allows it, and it helps a client that can use it);
    // only a client that asked is held to the minimum, see exports.ts.
    const sizes = blockSizes(exp);
    send(R.infoBlockSize(option, sizes.minimum, sizes.preferred, sizes.maximum));
    send(R.optionReply(option, Rep.ACK));
    if (option === Opt.INFO) return MORE;
    return { kind: 'go', session: this.session(exp, requests.has(Info.BLOCK_SIZE)) };
  }

  /** NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT: export name, then queries. */
  private metaContext(option: number, data: Buffer): HandshakeStep {
    const send = (m: Buffer): void => this.host.send(m);
    if (option === Opt.SET_META_CONTEXT) this.selection = undefined;
    if (option === Opt.SET_META_CONTEXT && !this.structuredReplies) {
      throw new InvalidOption('negotiate NBD_OPT_STRUCTURED_REPLY first');
    }
    const { name, queries } = parseMetaContextRequest(data);
    const exp = this.host.findExport(name);
    if (!exp) {
      send(R.errorReply(option, Rep.ERR_UNKNOWN, `no export named ${JSON.stringify(name)}`));
      return MORE;
    }
    if (option === Opt.LIST_META_CONTEXT) {
      for (const c of listContexts(this.host.metaContexts, queries)) send(R.metaContextReply(option, 0, c.name));
    } else {
      const contexts = selectContexts(this.host.metaContexts, queries);
      this.selection = { export: exp, contexts };
      for (const c of contexts) send(R.metaContextReply(option, c.id, c.name));
    }
    send(R.optionReply(option, Rep.ACK));
    return MORE;
  }

  /** The TLS handshake after STARTTLS succeeded: negotiation starts over inside TLS (no new greeting). */
  tlsStarted(): void {
    this.tls = true;
    this.structuredReplies = false;
    this.selection = undefined;
  }

  private session(exp: ExportConfig, enforceMinimum: boolean): Session {
    const contexts = this.selection && this.selection.export === exp ? this.selection.contexts : [];
    return { export: exp, structuredReplies: this.structuredReplies, contexts, enforceMinimum };
  }
}

const EMPTY: Buffer = Buffer.alloc(0);

function close(reason: string): HandshakeStep {
  return { kind: 'close', reason };
}

function parseMetaContextRequest(data: Buffer): { name: string; queries: string[] } {
  if (data.length < 8) throw new InvalidOption('shorter than 8 bytes');
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 8) throw new InvalidOption('name length runs past the option');
  if (nameLength > Limit.STRING) throw new InvalidOption('export name over 4096 bytes');
  const name = data.toString('utf8', 4, 4 + nameLength);
  let p = 4 + nameLength;
  const count = data.readUInt32BE(p);
  p += 4;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (data.length - p < 4) throw new InvalidOption('query count runs past the option');
    const length = data.readUInt32BE(p);
    p += 4;
    if (length > data.length - p) throw new InvalidOption('query length runs past the option');
    if (length > Limit.STRING) throw new InvalidOption('query over 4096 bytes');
    queries.push(data.toString('utf8', p, p + length));
    p += length;
  }
  if (p !== data.length) throw new InvalidOption('trailing bytes after the queries');
  return { name, queries };
}
