/**
 * ZFS names as Lifeboat accepts them: a strict subset of ZFS's own rules, checked before any
 * name reaches a `zfs`/`zpool` command. Names come from users and from manifests (not
 * trusted); passing them as separate arguments (never through a shell) stops shell
 * injection, and these checks stop option injection (`-o`), control characters and spaces
 * (ZFS itself allows spaces in names; Lifeboat does not), and names ZFS would reject.
 *
 * - pool: starts with a letter, then letters, digits, `_ - .`; not a reserved vdev word
 *   (mirror, raidz, draid, spare, log).
 * - dataset: pool, then `/component`s of letters, digits, `_ - . :`; no `.` or `..` component.
 * - snapshot: dataset `@` name (letters, digits, `_ - . :`).
 * - whole name at most 255 characters (ZFS_MAX_DATASET_NAME_LEN - 1).
 * - hold tag: letters, digits, `_ - . :`, not starting with `-`, at most 255.
 * - user property: `module:name` of lowercase letters, digits, `: + . _ -`, starting with a
 *   letter or digit, at most 255; values at most 1024 printable characters, no tab or newline
 *   (they would break `-H` parsing).
 */

export class ZfsNameError extends Error {
  override name = 'ZfsNameError';
}

const maxName = 255;
const component = /^[A-Za-z0-9_.:-]+$/;
const poolName = /^[A-Za-z][A-Za-z0-9_.-]*$/;
const reservedPool = /^(mirror|raidz|draid|spare)|^log$/;
const tagPattern = /^[A-Za-z0-9_.:][A-Za-z0-9_.:-]*$/;
const userProperty = /^[a-z0-9][a-z0-9+._-]*:[a-z0-9:+._-]*$/;
const maxValue = 1024;

const shown = (text: string) => JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}…` : text);

/** Why `name` is not an acceptable dataset name (filesystem or volume), or undefined when it is. */
export function datasetNameProblem(name: string): string | undefined {
  if (typeof name !== 'string' || name === '') return 'is empty';
  if (name.length > maxName) return `is longer than ${maxName} characters`;
  if (name.includes('@')) return 'names a snapshot, not a dataset';
  const [pool, ...rest] = name.split('/');
  if (!poolName.test(pool!))
    return 'must start with a pool name: a letter, then letters, digits, "_", "-" or "."';
  if (reservedPool.test(pool!)) return `uses the reserved pool name ${shown(pool!)}`;
  for (const part of rest) {
    if (part === '') return 'has an empty component ("//" or a trailing "/")';
    if (part === '.' || part === '..') return 'has a "." or ".." component';
    if (!component.test(part)) return `has a component with characters other than letters, digits, "_-.:"`;
  }
  return undefined;
}

/** Why `name` is not an acceptable full snapshot name (dataset@snap), or undefined when it is. */
export function snapshotNameProblem(name: string): string | undefined {
  if (typeof name !== 'string' || name === '') return 'is empty';
  if (name.length > maxName) return `is longer than ${maxName} characters`;
  const at = name.indexOf('@');
  if (at < 0) return 'is not a snapshot name (dataset@name)';
  const dataset = datasetNameProblem(name.slice(0, at));
  if (dataset) return `has a dataset part that ${dataset}`;
  return shortSnapshotNameProblem(name.slice(at + 1));
}

/** Why `name` is not an acceptable snapshot name (the part after "@"), or undefined. */
export function shortSnapshotNameProblem(name: string): string | undefined {
  if (typeof name !== 'string' || name === '') return 'has an empty snapshot part';
  if (!component.test(name)) return 'has a snapshot part with characters other than letters, digits, "_-.:"';
  if (name.length > maxName) return `is longer than ${maxName} characters`;
  return undefined;
}

function check(problem: string | undefined, what: string, value: string): string {
  if (problem) throw new ZfsNameError(`${what} ${shown(String(value))} ${problem}`);
  return value;
}

/** `name` if it is an acceptable dataset name; throws ZfsNameError otherwise. */
export const checkDataset = (name: string, what = 'dataset'): string =>
  check(datasetNameProblem(name), what, name);

/** `name` if it is an acceptable full snapshot name; throws ZfsNameError otherwise. */
export const checkSnapshot = (name: string, what = 'snapshot'): string =>
  check(snapshotNameProblem(name), what, name);

/** `name` if it is an acceptable snapshot part (after "@"); throws ZfsNameError otherwise. */
export const checkShortSnapshot = (name: string, what = 'snapshot name'): string =>
  check(shortSnapshotNameProblem(name), what, name);

/** `tag` if it is an acceptable hold tag; throws ZfsNameError otherwise. */
export function checkTag(tag: string): string {
  const ok = typeof tag === 'string' && tag.length <= maxName && tagPattern.test(tag);
  return check(
    ok ? undefined : 'is not a hold tag (letters, digits, "_-.:", not starting with "-")',
    'tag',
    tag,
  );
}

/** `name` if it is an acceptable user property name (module:name); throws ZfsNameError otherwise. */
export function checkUserProperty(name: string): string {
  const ok = typeof name === 'string' && name.length <= maxName && userProperty.test(name);
  return check(
    ok ? undefined : 'is not a user property (module:name, lowercase letters, digits, ":+._-")',
    'property',
    name,
  );
}

/** `value` if it can be stored as a user property value; throws ZfsNameError otherwise. */
export function checkPropertyValue(name: string, value: string): string {
  const ok = typeof value === 'string' && value.length <= maxValue && !/[\u0000-\u001f\u007f]/.test(value);
  return check(
    ok ? undefined : `is not a value for ${name} (at most ${maxValue} characters, no control characters)`,
    'value',
    value,
  );
}

/** The dataset and snapshot parts of a full snapshot name (checked). */
export function splitSnapshot(name: string): { dataset: string; snapshot: string } {
  checkSnapshot(name);
  const at = name.indexOf('@');
  return { dataset: name.slice(0, at), snapshot: name.slice(at + 1) };
}
