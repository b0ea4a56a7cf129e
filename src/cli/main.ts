/**
 * The `cowdisk` command line: a thin shell over the library. Each command lives in its own file
 * and exports a `register` function that adds it to the program; this file only assembles them
 * and turns errors into messages and exit codes (docs/CLI.md lists the codes).
 */
import { Command, CommanderError } from 'commander';
import { CowdiskError } from '../index.js';
import { commands } from './commands.js';
import { ExitCode } from './exit-codes.js';

export function buildProgram(): Command {
  const program = new Command('cowdisk')
    .description('Copy-on-write disk images: sealed snapshot layers, thin overlays, served over NBD.')
    .version(VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  for (const register of commands) register(program);
  return program;
}

const VERSION = '0.1.0';

export async function main(argv: string[]): Promise<void> {
  // A reader that leaves early (`cowdisk --help | head`) is not an error: drop the rest quietly.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  });
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    process.exitCode = report(err);
  }
}

function report(err: unknown): number {
  if (err instanceof CommanderError) {
    // commander has printed the message (or the help / version text) already.
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return ExitCode.OK;
    return err.exitCode === 0 ? ExitCode.OK : ExitCode.USAGE;
  }
  if (err instanceof CowdiskError) {
    process.stderr.write(`cowdisk: ${err.message} [${err.code}]\n`);
    return ExitCode.forError(err);
  }
  process.stderr.write(`cowdisk: unexpected error: ${(err as Error)?.stack ?? String(err)}\n`);
  return ExitCode.INTERNAL;
}
