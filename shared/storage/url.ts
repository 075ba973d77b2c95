import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError } from '../errors.ts';

export type StorageLocation =
  | { provider: 'fs'; url: string; root: string }
  | { provider: 's3' | 'gcs' | 'azure'; url: string; bucket: string; prefix: string };

const accepted =
  'a folder path, file:///abs/path, s3://bucket/prefix, gs://bucket/prefix or azblob://container/prefix';

/** A URL as it may be shown: the query (it may hold a token, such as an Azure SAS) cut off. */
function withoutQuery(url: string): string {
  return url.replace(/[?#].*$/s, (q) => `${q[0]}…`);
}

/** Parses the `storage` input into a provider and its location; relative paths resolve against `cwd`. */
export function parseStorageUrl(input: string, cwd = process.cwd()): StorageLocation {
  const url = input.trim();
  if (!url) throw new UserError(`storage: empty; accepted: ${accepted}`);
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(url)?.[1]?.toLowerCase();
  if (!scheme) return { provider: 'fs', url, root: path.resolve(cwd, url) };
  // No bucket, container or host name has ':' or '@': there they start user info (a key and
  // its secret, which may hold '/') or a port. Nothing of the URL is repeated then: the error
  // line goes to logs that others read.
  const authority = /^[^:]*:\/\/([^/?#]*)/.exec(url)?.[1] ?? '';
  if (/[:@]/.test(authority)) {
    throw new UserError(
      `storage: the ${scheme}:// URL has user info or a port (not shown here: it may hold credentials); accepted: ${accepted}, with credentials and endpoints from the environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL_S3, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_KEY …), never in the URL`,
    );
  }
  if (/[?#]/.test(url)) {
    throw new UserError(
      `storage: '${withoutQuery(url)}' has a query or fragment (not shown here: it may hold a token); accepted: ${accepted}, with credentials and options from the environment, never in the URL`,
    );
  }
  if (scheme === 'file') {
    let root: string;
    try {
      root = fileURLToPath(url);
    } catch {
      throw new UserError(`storage: '${url}' is not a valid file:// URL; accepted: file:///absolute/path`);
    }
    return { provider: 'fs', url, root };
  }
  const provider = ({ s3: 's3', gs: 'gcs', azblob: 'azure' } as const)[scheme as 's3' | 'gs' | 'azblob'];
  if (!provider)
    throw new UserError(`storage: unknown scheme '${scheme}://' in '${url}'; accepted: ${accepted}`);
  const rest = url.slice(scheme.length + 3);
  const slash = rest.indexOf('/');
  const bucket = slash < 0 ? rest : rest.slice(0, slash);
  const prefix = (slash < 0 ? '' : rest.slice(slash + 1)).replace(/^\/+|\/+$/g, '').replace(/\/{2,}/g, '/');
  const problem = bucketProblem(provider, bucket);
  if (problem) throw new UserError(`storage: '${bucket}' in '${url}' ${problem}`);
  return { provider, url, bucket, prefix };
}

function bucketProblem(provider: 's3' | 'gcs' | 'azure', bucket: string): string | undefined {
  if (!bucket) return `names no ${provider === 'azure' ? 'container' : 'bucket'}`;
  if (provider === 'azure') {
    return /^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/.test(bucket)
      ? undefined
      : 'is not a valid container name: 3-63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit';
  }
  return /^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$/.test(bucket)
    ? undefined
    : 'is not a valid bucket name: 3-63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit';
}
