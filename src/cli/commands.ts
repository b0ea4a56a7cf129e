/**
 * The list of commands, in the order `cowdisk --help` shows them. Each module exports a
 * `register(program)` that adds its command (with its --help text and an example).
 */
import type { Command } from 'commander';
import { register as attach } from './attach.js';
import { register as check } from './check.js';
import { register as clone } from './clone.js';
import { register as create } from './create.js';
import { register as detach } from './detach.js';
import { register as devices } from './devices.js';
import { register as exportImage } from './export.js';
import { register as importRaw } from './import.js';
import { register as info } from './info.js';
import { register as map } from './map.js';
import { register as serve } from './serve.js';
import { register as snapshot } from './snapshot.js';
import { register as commit } from './commit.js';
import { register as rebase } from './rebase.js';
import { register as flatten } from './flatten.js';
import { register as diff } from './diff.js';
import { register as gc } from './gc.js';
import { register as push } from './push.js';
import { register as pull } from './pull.js';
import { register as upgrade } from './upgrade.js';
import { register as bench } from './bench.js';

export type Register = (program: Command) => void;

export const commands: Register[] = [create, importRaw, clone, info, map, check, exportImage, snapshot, commit, rebase, flatten, upgrade, diff, gc, push, pull, serve, attach, detach, devices, bench];
