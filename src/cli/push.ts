/**
 * `cowdisk push IMAGE REF`: a sealed layer and every sealed layer below it into a registry
 * (src/ops/push.ts), with a progress bar, then what went up and what the registry had.
 */
import type { Command } from 'commander';
import { pushImage, type PushResult } from '../index.js';
import { count, printJson, printLines } from './output.js';
import { withProgress } from './progress.js';
import { addRegistryOptions, registryAccess, type RegistryCliOptions } from './registry-options.js';
import { formatSize } from './size.js';

interface PushCliOptions extends RegistryCliOptions {
  json?: boolean;
}

export function register(program: Command): void {
  const command = program
    .command('push')
    .description('Upload a sealed layer and every layer below it to an OCI registry, as one tagged chain.')
    .argument('<image>', 'a sealed snapshot layer (seal an overlay first with `cowdisk snapshot`)')
    .argument('<ref>', 'where to: [oci://]HOST[:PORT]/REPO[:TAG] (default tag latest)');
  addRegistryOptions(command, false)
    .option('--json', 'print {reference, manifestDigest, layers: [{path, digest, blobDigest, size, outcome}], sent}')
    .addHelpText(
      'after',
      `
Each layer is one blob; blobs the repository has are not sent again (outcome "present"), and a
lazily cloned layer's blob is mounted from the repository it came from on the same registry
("mounted"). Credentials: --username with --password-stdin, else the Docker config's login
(\`docker login HOST\`, $DOCKER_CONFIG/config.json). HTTPS, except plain HTTP with --plain-http
or for a registry on this machine that does not speak TLS.

Examples:
  $ cowdisk push app.snap registry.example.com/disks/app:v1
  Pushed app.snap to registry.example.com/disks/app:v1 (sha256:3f1c...): 2 layers, 1 uploaded (212.4 MiB sent), 1 present.
  $ echo "$TOKEN" | cowdisk push --username ci --password-stdin app.snap localhost:5000/disks/app:v1`,
    )
    .action(async (image: string, ref: string, options: PushCliOptions) => {
      const access = await registryAccess(options);
      const pushed = await withProgress(`pushing ${image}`, (onProgress) => pushImage(image, ref, { ...access, onProgress }));
      if (options.json) printJson(pushed);
      else printLines(summary(image, pushed));
    });
}

function summary(image: string, pushed: PushResult): string[] {
  const by = (outcome: string) => pushed.layers.filter((l) => l.outcome === outcome).length;
  const parts = [`${by('uploaded')} uploaded (${formatSize(pushed.sent)} sent)`];
  if (by('mounted') > 0) parts.push(`${by('mounted')} mounted`);
  if (by('present') > 0) parts.push(`${by('present')} present`);
  return [`Pushed ${image} to ${pushed.reference} (${pushed.manifestDigest}): ${count(pushed.layers.length, 'layer')}, ${parts.join(', ')}.`];
}
