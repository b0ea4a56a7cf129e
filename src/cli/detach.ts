/**
 * `cowdisk detach DEVICE`: flush the device, disconnect it, and wait until the process serving it
 * has closed the image cleanly. The work is in src/kernel/detach.ts.
 */
import type { Command } from 'commander';
import { detach, parseDevice } from '../index.js';
import { parseCount } from './size.js';

interface DetachCliOptions {
  force?: boolean;
  wait: string;
}

export function register(program: Command): void {
  program
    .command('detach')
    .description('Flush and disconnect /dev/nbdN, and wait until its image is closed cleanly (needs root).')
    .argument('<device>', 'the device to detach: /dev/nbdN (or nbdN)')
    .option('-f, --force', 'disconnect even while mounted, or when another tool attached it (unwritten data is lost)')
    .option('-w, --wait <seconds>', 'how long to wait for the serving process to close the image', '60')
    .addHelpText(
      'after',
      `
The device must not be mounted: \`umount\` it first. A device whose serving process died
(\`cowdisk devices\` shows it as orphaned) is disconnected without a flush, and its image
must then be checked with \`cowdisk check IMAGE\`.

Example:
  $ sudo umount /mnt/vm1
  $ sudo cowdisk detach /dev/nbd0
  detached /dev/nbd0: /var/lib/vms/vm1.cow closed cleanly`,
    )
    .action(async (name: string, options: DetachCliOptions) => {
      const wait = parseCount(options.wait, '--wait', 1);
      const result = await detach(parseDevice(name), { force: options.force, timeoutMs: wait * 1000 });
      if (!result.record) {
        process.stdout.write(`detached ${result.device}\n`);
      } else if (result.orphaned) {
        const { image, pid, readOnly } = result.record;
        process.stdout.write(`detached ${result.device}\n`);
        process.stderr.write(
          readOnly
            ? `cowdisk: the process serving ${image} (pid ${pid}) had died; it was attached read-only, so the image is unchanged.\n`
            : `cowdisk: warning: the process serving ${image} (pid ${pid}) had died, so the image was not closed cleanly; ` +
                `run \`cowdisk check ${image}\`.\n`,
        );
      } else {
        process.stdout.write(`detached ${result.device}: ${result.record.image} closed cleanly\n`);
      }
    });
}
