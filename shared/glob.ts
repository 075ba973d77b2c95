/** A glob as an anchored RegExp: `*` any run of characters, `?` one; everything else literal. */
export function globRegex(glob: string): RegExp {
  const body = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replaceAll('*', '.*')
    .replaceAll('?', '.');
  return new RegExp(`^${body}$`);
}

/** Whether a value matches any of the globs; the patterns are compiled once. */
export function globMatcher(patterns: string[]): (value: string) => boolean {
  const compiled = patterns.map(globRegex);
  return (value) => compiled.some((re) => re.test(value));
}
