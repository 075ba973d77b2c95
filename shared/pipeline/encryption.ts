import type { Transform } from 'node:stream';
import { Decrypter, Encrypter, identityToRecipient } from 'age-encryption';
import { UserError } from '../errors.ts';
import { AgeDecryptError, AgeDecrypter, AgePayloadEncrypter } from './age-stream.ts';

/** What an artifact is encrypted to: public-key recipients or a passphrase (never both). */
export type EncryptionKeys = { recipients: string[] } | { passphrase: string };

/** What a reader brings: identities (AGE-SECRET-KEY-1…) and/or a passphrase. */
export interface DecryptionKeys {
  identities: string[];
  passphrase?: string;
  /**
   * Read an artifact that is not encrypted although keys are given (input allow-unencrypted).
   * Without it such an artifact is refused: the backup may have been replaced by one that
   * whoever can write the storage made without the keys.
   */
  allowUnencrypted?: boolean;
}

const recipientPattern = /^age1[0-9a-z]+$/;
const identityPattern = /^AGE-SECRET-KEY-(PQ-)?1[0-9A-Z]+$/;

/** Splits a list input: commas, newlines, and `#` comments (as in an age recipients file). */
export function splitList(value: string | undefined): string[] {
  return (value ?? '')
    .split(/\r?\n/)
    .map((line) => line.replace(/#.*$/, ''))
    .flatMap((line) => line.split(','))
    .map((item) => item.trim())
    .filter(Boolean);
}

/**
 * Parses recipients, each checked as age-encryption will take it (bech32 checksum, type and
 * key length), so that a mistyped key is a bad input before any work starts, not a failure
 * part-way through the backup.
 */
export function parseRecipients(value: string | undefined, input = 'age-recipients'): string[] {
  const recipients = splitList(value);
  const accepted = 'public keys starting with age1 (from age-keygen -y), comma or newline separated';
  for (const r of recipients) {
    const shown = r.length > 16 ? `${r.slice(0, 12)}…` : r;
    if (!recipientPattern.test(r)) {
      throw new UserError(`${input}: '${shown}' is not an age recipient; accepted: ${accepted}`);
    }
    try {
      new Encrypter().addRecipient(r);
    } catch {
      throw new UserError(
        `${input}: '${shown}' is not a valid age recipient (its checksum or length is wrong: a character mistyped, missing or extra?); accepted: ${accepted}`,
      );
    }
  }
  return recipients;
}

/** Parses identities from a key file's text: one per line, `#` comments allowed. */
export function parseIdentities(value: string | undefined, input = 'age-identity'): string[] {
  const identities = splitList(value);
  for (const id of identities) {
    if (!identityPattern.test(id)) {
      throw new UserError(
        `${input}: does not hold an age identity; accepted: the secret key line starting with AGE-SECRET-KEY-1 (from age-keygen)`,
      );
    }
  }
  return identities;
}

/** The public recipient for an identity (for tests and the drill). */
export function recipientOf(identity: string): Promise<string> {
  return identityToRecipient(identity);
}

/** The end of an age header: the newline after the `--- <MAC>` line. */
function headerEnd(file: Uint8Array): number {
  const bytes = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  const mac = bytes.indexOf('\n---');
  const end = mac < 0 ? -1 : bytes.indexOf('\n', mac + 4);
  if (end < 0) throw new Error('age-encryption produced no header');
  return end + 1;
}

/**
 * A transform that encrypts what is written to it into the age format, readable with the
 * standard `age -d`. The header comes from the age-encryption package (an empty file
 * encrypted to the same recipients, whose file key a capturing recipient receives); the
 * payload is sealed natively (age-stream.ts).
 */
export async function encryptStream(keys: EncryptionKeys): Promise<Transform> {
  const encrypter = new Encrypter();
  let fileKey: Uint8Array | undefined;
  if ('passphrase' in keys) encrypter.setPassphrase(keys.passphrase);
  else {
    encrypter.addRecipient({
      wrapFileKey(key: Uint8Array) {
        fileKey = Uint8Array.from(key);
        return [];
      },
    });
    for (const r of keys.recipients) encrypter.addRecipient(r);
  }
  const empty = await encrypter.encrypt(new Uint8Array(0));
  const header = empty.subarray(0, headerEnd(empty));
  if ('passphrase' in keys) {
    const decrypter = new Decrypter();
    decrypter.addPassphrase(keys.passphrase);
    fileKey = await decrypter.decryptHeader(header);
  }
  if (!fileKey) throw new Error('age-encryption did not hand over the file key');
  return new AgePayloadEncrypter(header, fileKey);
}

/**
 * A transform that decrypts an age stream. A wrong key fails before any plaintext is
 * produced; a damaged or truncated stream fails at the damaged chunk.
 */
export function decryptStream(keys: DecryptionKeys): Transform {
  const decrypter = new Decrypter();
  for (const id of keys.identities) decrypter.addIdentity(id);
  if (keys.passphrase) decrypter.addPassphrase(keys.passphrase);
  return new AgeDecrypter(async (header) => {
    try {
      return await decrypter.decryptHeader(header);
    } catch (error) {
      const message = (error as Error).message;
      if (/no identity matched|incorrect passphrase|failed to decrypt|passphrase/i.test(message)) {
        throw new UserError(`age-identity: none of the given keys can decrypt this backup (${message})`);
      }
      throw new AgeDecryptError(`the age header is damaged: ${message}`);
    }
  });
}
