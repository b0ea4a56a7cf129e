/**
 * The `WWW-Authenticate` challenges of a 401 (RFC 9110 section 11.6.1): a scheme, then
 * comma-separated `name=value` parameters whose value is a token or a quoted string. A registry
 * sends `Basic realm="..."` (htpasswd) or `Bearer realm="...",service="...",scope="..."` (the
 * token flow); one header may carry several challenges, and several headers may be sent.
 */

export interface Challenge {
  /** Lower-cased: `basic`, `bearer`. */
  scheme: string;
  /** Parameter names lower-cased, values unquoted. */
  params: Record<string, string>;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+/;

export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  const headers = Array.isArray(header) ? header : [header];
  return headers.flatMap(parseOne);
}

function parseOne(text: string): Challenge[] {
  const challenges: Challenge[] = [];
  let rest = text;
  let current: Challenge | undefined;
  for (;;) {
    rest = rest.replace(/^[\s,]+/, '');
    const word = TOKEN.exec(rest)?.[0];
    if (word === undefined) return challenges;
    const after = rest.slice(word.length).replace(/^\s+/, '');
    if (after.startsWith('=') && current !== undefined) {
      const { value, remainder } = readValue(after.slice(1).replace(/^\s+/, ''));
      current.params[word.toLowerCase()] = value;
      rest = remainder;
    } else {
      current = { scheme: word.toLowerCase(), params: {} };
      challenges.push(current);
      rest = after;
    }
  }
}

function readValue(text: string): { value: string; remainder: string } {
  if (!text.startsWith('"')) {
    const value = TOKEN.exec(text)?.[0] ?? '';
    return { value, remainder: text.slice(value.length) };
  }
  let value = '';
  for (let i = 1; i < text.length; i++) {
    const c = text[i];
    if (c === '\\' && i + 1 < text.length) value += text[++i];
    else if (c === '"') return { value, remainder: text.slice(i + 1) };
    else value += c;
  }
  return { value, remainder: '' };
}
