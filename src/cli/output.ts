/**
 * What commands print on stdout: JSON for scripts (`--json`), aligned text for people. Both go to
 * stdout; messages about the work (progress, warnings) go to stderr, so `cowdisk map --json x |
 * jq` never sees them.
 *
 * JSON is printed as the library returns it, numbers as numbers (exact up to 2^53 bytes), so a
 * script gets the same field names as the TypeScript types in src/image/info.ts.
 */

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function printLines(lines: readonly string[]): void {
  if (lines.length > 0) process.stdout.write(`${lines.join('\n')}\n`);
}

/**
 * Aligns rows (the first is the heading) into columns two spaces apart. Columns listed in
 * `right` are right-aligned (numbers); the last column is never padded.
 */
export function formatTable(rows: readonly (readonly string[])[], right: readonly number[] = []): string[] {
  if (rows.length === 0) return [];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) =>
    r.map((cell, i) => (right.includes(i) ? cell.padStart(widths[i]) : i === r.length - 1 ? cell : cell.padEnd(widths[i]))).join('  '),
  );
}
