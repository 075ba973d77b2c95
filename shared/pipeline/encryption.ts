import { Duplex, PassThrough, Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { Decrypter, Encrypter, identityToRecipient } from 'age-encryption';
import { UserError } from '../errors.ts';
import { chunkBytes } from './buffers.ts';

/** What an artifact is encrypted to: public-key recipients or a passphrase (never both). */
export type EncryptionKeys = { recipients: string[] } | { passphrase: string };

/** What a reader brings: identities (AGE-SECRET-KEY-1…) and/or a passphrase. */
export interface DecryptionKeys {
  identities: string[];
  passphrase?: string;
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

export function parseRecipients(value: string | undefined, input = 'age-recipients'): string[] {
  const recipients = splitList(value);
  for (const r of recipients) {
    if (!recipientPattern.test(r)) {
      throw new UserError(
        `${input}: '${r.slice(0, 12)}…' is not an age recipient; accepted: public keys starting with age1 (from age-keygen -y)`,
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

function webToNode(stream: ReadableStream<Uint8Array>): Readable {
  return Readable.fromWeb(stream as unknown as WebReadableStream<Uint8Array>, { highWaterMark: chunkBytes });
}

/**
 * A duplex that encrypts what is written to it into the age format. Any reader with the
 * matching identity can decrypt it with the standard `age -d`.
 */
export function encryptStream(keys: EncryptionKeys): Duplex {
  const encrypter = new Encrypter();
  if ('passphrase' in keys) encrypter.setPassphrase(keys.passphrase);
  else for (const r of keys.recipients) encrypter.addRecipient(r);
  return ageDuplex((input) => encrypter.encrypt(input));
}

/**
 * A duplex that decrypts an age stream. A wrong key fails before any plaintext is
 * produced; a corrupted or truncated stream fails at the damaged chunk.
 */
export function decryptStream(keys: DecryptionKeys): Duplex {
  const decrypter = new Decrypter();
  for (const id of keys.identities) decrypter.addIdentity(id);
  if (keys.passphrase) decrypter.addPassphrase(keys.passphrase);
  return ageDuplex(async (input) => {
    try {
      return await decrypter.decrypt(input);
    } catch (error) {
      const message = (error as Error).message;
      if (/no identity matched|incorrect passphrase|failed to decrypt/i.test(message)) {
        throw new UserError(`age-identity: none of the given keys can decrypt this backup (${message})`);
      }
      throw error;
    }
  });
}

function ageDuplex(
  transform: (input: ReadableStream<Uint8Array>) => Promise<ReadableStream<Uint8Array>>,
): Duplex {
  const input = new PassThrough({ highWaterMark: chunkBytes });
  const webInput = Readable.toWeb(input) as unknown as ReadableStream<Uint8Array>;
  const output = new PassThrough({ highWaterMark: chunkBytes });
  transform(webInput).then(
    (result) => {
      const source = webToNode(result);
      source.on('error', (error) => output.destroy(error));
      source.pipe(output);
    },
    (error) => output.destroy(error),
  );
  const duplex = Duplex.from({ writable: input, readable: output });
  output.on('error', (error) => {
    input.destroy(error);
    duplex.destroy(error);
  });
  return duplex;
}
