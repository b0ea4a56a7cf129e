/**
 * Reads an SVG or (well-formed) HTML file with an XML parser that is not ours: Python's
 * ElementTree (expat). A file that is not well-formed fails the parse, and so the test. What the
 * tests look at comes back as JSON: the root, every table (heading and rows, by id) and every
 * <path> with its data-series, grouped by the <figure> it is in ("" outside any).
 */
import { spawnSync } from 'node:child_process';

export interface XmlSummary {
  root: string;
  tables: Record<string, { head: string[]; rows: string[][] }>;
  paths: Record<string, string[]>;
}

const SCRIPT = String.raw`
import json, sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
local = lambda tag: tag.rsplit('}', 1)[-1]
text = lambda e: ''.join(e.itertext()).strip()
tables, paths = {}, {}
def walk(e, figure):
    if local(e.tag) == 'figure':
        figure = e.get('id', '')
    if local(e.tag) == 'table':
        rows = [[text(c) for c in tr] for tr in e.iter() if local(tr.tag) == 'tr']
        tables[e.get('id', '')] = {'head': rows[0] if rows else [], 'rows': rows[1:]}
    if local(e.tag) == 'path':
        paths.setdefault(figure, []).append(e.get('data-series'))
    for c in e:
        walk(c, figure)
walk(root, '')
print(json.dumps({'root': local(root.tag), 'tables': tables, 'paths': paths}))
`;

export function readXml(file: string): XmlSummary {
  const r = spawnSync('python3', ['-c', SCRIPT, file], { encoding: 'utf8' });
  if (r.error) throw new Error(`python3 is needed to check ${file} with an XML parser: install the Debian package python3 (${r.error.message})`);
  if (r.status !== 0) throw new Error(`${file} is not well-formed XML: ${r.stderr.trim().split('\n').pop()}`);
  return JSON.parse(r.stdout) as XmlSummary;
}
