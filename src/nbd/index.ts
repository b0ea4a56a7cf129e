/**
 * The NBD server, as the rest of cowdisk sees it: a server to give exports to, and the two
 * functions that say what an export advertises (which `attach` passes on to the kernel).
 */
export { NbdServer, type NbdServerOptions, type TransmissionOptions } from './server.js';
export { DEFAULT_SOCKET_MODE, isLoopback, type ListenOptions } from './listeners.js';
export { transmissionFlags, blockSizes, isReadOnly, type ExportConfig, type BlockSizes, type FlagOptions } from './exports.js';
export { loadTlsCredentials, parsePskFile, type TlsCredentials, type TlsMode, type TlsSettings } from './tls-credentials.js';
