/**
 * The options every command that talks to a registry takes (`push`, `pull`, `clone REF`): how to
 * reach it (`--ca-file`, `--plain-http`), who we are (`--username` with `--password-stdin`, else
 * the Docker config's logins, as every OCI tool finds them) and, for those that fetch layers,
 * where the layer cache is. The password is read from stdin, never from the command line, where
 * other users would see it in the process list.
 */
import type { Command } from 'commander';
import { Credentials, CowdiskError, ErrorCode, type RegistryAccess } from '../index.js';

export interface RegistryCliOptions {
  caFile?: string;
  plainHttp?: boolean;
  username?: string;
  passwordStdin?: boolean;
  cache?: string;
}

export function addRegistryOptions(command: Command, withCache: boolean): Command {
  command
    .option('--ca-file <file>', "trust this PEM file's CA certificates for the registry, besides the system's")
    .option('--plain-http', 'speak plain HTTP to the registry (localhost, 127.0.0.1 and [::1] fall back to it by themselves)')
    .option('--username <name>', 'log in as this user, with the password read from stdin (--password-stdin); default: the Docker config\'s login')
    .option('--password-stdin', 'read the password for --username from stdin');
  if (withCache) command.option('--cache <dir>', 'the layer cache shared by every clone (default $XDG_CACHE_HOME/cowdisk, else ~/.cache/cowdisk)');
  return command;
}

/** The registry access the options describe; reads the password from stdin when asked to. */
export async function registryAccess(options: RegistryCliOptions, stdin: NodeJS.ReadableStream = process.stdin): Promise<RegistryAccess> {
  if ((options.username === undefined) !== (options.passwordStdin !== true)) {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, '--username and --password-stdin go together: `echo "$PASSWORD" | cowdisk ... --username USER --password-stdin`.');
  }
  const access: RegistryAccess = { caFile: options.caFile, plainHttp: options.plainHttp };
  if (options.username !== undefined) {
    const chunks: Buffer[] = [];
    for await (const chunk of stdin) chunks.push(Buffer.from(chunk as Buffer));
    // As `docker login --password-stdin`: the trailing newline of `echo` is not part of it.
    const password = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
    if (password === '') throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, '--password-stdin read an empty password from stdin.');
    access.credentials = new Credentials(options.username, password);
  }
  return access;
}
