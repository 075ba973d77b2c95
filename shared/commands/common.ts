import { readFileSync } from 'node:fs';
import { parseDuration } from '../action/inputs.ts';
import type { InputReader, InputSpec } from '../action/spec.ts';
import { validateSetName } from '../catalog/ids.ts';
import { UserError } from '../errors.ts';
import {
  type DecryptionKeys,
  type EncryptionKeys,
  parseIdentities,
  parseRecipients,
} from '../pipeline/encryption.ts';
import { openStorage } from '../storage/open.ts';
import type { Storage } from '../storage/storage.ts';
import { joinKey } from '../storage/storage.ts';

export const storageInput: InputSpec = {
  name: 'storage',
  description:
    'Where backups live: a folder (./backups), file:///path, s3://bucket/prefix, gs://bucket/prefix or azblob://container/prefix. Credentials come from the standard environment variables.',
  default: './backups',
};

export const setInput: InputSpec = {
  name: 'set',
  description:
    'The backup set: one protected thing over time, e.g. prod-mysql or etc-nova (lowercase letters, digits, . _ -).',
  required: true,
};

export const timeoutInput = (fallback: string): InputSpec => ({
  name: 'timeout',
  description: 'Give up (and clean up) after this long, e.g. 90m or 6h.',
  default: fallback,
});

export const progressInput: InputSpec = {
  name: 'progress-interval',
  description: 'How often long work prints a progress line (bytes, rate, ETA).',
  default: '10s',
};

export const passphraseInput: InputSpec = {
  name: 'age-passphrase',
  description:
    'A passphrase for age encryption instead of recipients (secret; on the CLI only from LIFEBOAT_AGE_PASSPHRASE).',
  secretEnv: 'LIFEBOAT_AGE_PASSPHRASE',
};

export interface CommonOptions {
  storage: Storage;
  timeoutSeconds: number;
  progressIntervalMs: number;
}

export function parseStorage(read: InputReader): Storage {
  return openStorage(read('storage') || './backups');
}

export function parseSet(read: InputReader): string {
  const set = read('set');
  if (!set?.trim()) throw new UserError('set: required; accepted: a set name such as prod-mysql or etc-nova');
  return validateSetName(set);
}

export function parseTimeout(read: InputReader, fallback: string): number {
  return parseDuration('timeout', read('timeout'), fallback);
}

export function parseProgress(read: InputReader): number {
  return parseDuration('progress-interval', read('progress-interval'), '10s') * 1000;
}

/** Recipients or a passphrase; none means the backup is not encrypted. */
export function parseEncryption(read: InputReader): EncryptionKeys | undefined {
  const recipients = parseRecipients(read('age-recipients'));
  const passphrase = read('age-passphrase');
  if (recipients.length && passphrase) {
    throw new UserError('age-passphrase: give either age-recipients or age-passphrase, not both');
  }
  if (recipients.length) return { recipients };
  if (passphrase) return { passphrase };
  return undefined;
}

/** Identities from the secret input or a key file, and/or a passphrase. */
export function parseDecryption(read: InputReader): DecryptionKeys {
  const identities = parseIdentities(read('age-identity'));
  const file = read('age-identity-file')?.trim();
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (error) {
      throw new UserError(
        `age-identity-file: cannot read '${file}' (${(error as NodeJS.ErrnoException).code}); accepted: a file made by age-keygen`,
      );
    }
    identities.push(...parseIdentities(text, 'age-identity-file'));
  }
  return { identities, passphrase: read('age-passphrase') || undefined };
}

/** The URL of a backup's folder, for outputs and logs. */
export function backupUri(storage: Storage, set: string, id: string): string {
  return joinKey(storage.url, `${set}/${id}/`);
}
