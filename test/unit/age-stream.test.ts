/** The native age payload against the reference implementation (age-encryption), both ways. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { Decrypter, Encrypter, generateIdentity } from 'age-encryption';
import { UserError } from '../../shared/errors.ts';
import { decryptStream, encryptStream, recipientOf } from '../../shared/pipeline/encryption.ts';

const sizes = [0, 1, 65535, 65536, 65537, 131072, 200_000];

async function through(stream: NodeJS.ReadWriteStream, input: Buffer, pieces = 3): Promise<Buffer> {
  const parts: Buffer[] = [];
  const step = Math.max(1, Math.ceil(input.length / pieces));
  const source = Readable.from(
    input.length
      ? Array.from({ length: Math.ceil(input.length / step) }, (_, i) =>
          input.subarray(i * step, (i + 1) * step),
        )
      : [],
  );
  for await (const chunk of source.pipe(
    stream as unknown as NodeJS.WritableStream,
  ) as unknown as AsyncIterable<Buffer>)
    parts.push(chunk);
  return Buffer.concat(parts);
}

test('what Lifeboat encrypts, the reference implementation decrypts', async () => {
  const identity = await generateIdentity();
  for (const size of sizes) {
    const plain = randomBytes(size);
    const sealed = await through(await encryptStream({ recipients: [await recipientOf(identity)] }), plain);
    const reference = new Decrypter();
    reference.addIdentity(identity);
    assert.deepEqual(Buffer.from(await reference.decrypt(sealed)), plain, `size ${size}`);
  }
});

test('what the reference implementation encrypts, Lifeboat decrypts', async () => {
  const identity = await generateIdentity();
  for (const size of sizes) {
    const plain = randomBytes(size);
    const reference = new Encrypter();
    reference.addRecipient(await recipientOf(identity));
    const sealed = Buffer.from(await reference.encrypt(plain));
    assert.deepEqual(
      await through(decryptStream({ identities: [identity] }), sealed, 7),
      plain,
      `size ${size}`,
    );
  }
});

test('several recipients, and a passphrase', async () => {
  const [a, b] = [await generateIdentity(), await generateIdentity()];
  const plain = randomBytes(70_000);
  const sealed = await through(
    await encryptStream({ recipients: [await recipientOf(a), await recipientOf(b)] }),
    plain,
  );
  assert.deepEqual(await through(decryptStream({ identities: [b] }), sealed), plain);
  const withPass = await through(await encryptStream({ passphrase: 'a long enough passphrase' }), plain);
  assert.deepEqual(
    await through(decryptStream({ identities: [], passphrase: 'a long enough passphrase' }), withPass),
    plain,
  );
});

test('a wrong key, a flipped byte, a truncation at a chunk boundary and extra bytes all fail', async () => {
  const identity = await generateIdentity();
  const plain = randomBytes(3 * 65536);
  const sealed = await through(await encryptStream({ recipients: [await recipientOf(identity)] }), plain);
  await assert.rejects(
    through(decryptStream({ identities: [await generateIdentity()] }), sealed),
    (e: unknown) => e instanceof UserError,
  );
  const flipped = Buffer.from(sealed);
  flipped[flipped.length - 70_000]! ^= 1;
  await assert.rejects(through(decryptStream({ identities: [identity] }), flipped), /failed authentication/);
  const early = Buffer.from(sealed);
  early[sealed.indexOf('\n---') + 200]! ^= 1; // inside the first payload chunk
  await assert.rejects(
    through(decryptStream({ identities: [identity] }), early, 9),
    /chunk 0 failed authentication/,
  );
  const cut = sealed.subarray(0, sealed.length - (65536 + 16));
  await assert.rejects(through(decryptStream({ identities: [identity] }), cut), /damaged or truncated/);
  await assert.rejects(
    through(decryptStream({ identities: [identity] }), Buffer.concat([sealed, Buffer.from('x')])),
    /failed authentication/,
  );
  await assert.rejects(
    through(
      decryptStream({ identities: [identity] }),
      Buffer.from('not age at all\n--- x\n0123456789abcdef'),
    ),
    /not an age file/,
  );
});
