/** The MySQL connection inputs: mysql-url or separate fields, never both, never a crash on a bad URL. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { InputReader } from '../../shared/action/spec.ts';
import { UserError } from '../../shared/errors.ts';
import { parseConnection } from '../../shared/kinds/mysql/connection.ts';

/** Inputs as an action passes them: host, port, user and ssl-mode at their defaults unless given. */
function reader(inputs: Record<string, string>): InputReader {
  const defaults: Record<string, string> = {
    host: '127.0.0.1',
    port: '3306',
    user: 'root',
    'ssl-mode': 'preferred',
  };
  return (name) => inputs[name] ?? defaults[name];
}

const refused = (inputs: Record<string, string>, pattern: RegExp, secret?: string) =>
  assert.throws(
    () => parseConnection(reader(inputs)),
    (e: unknown) => {
      assert.ok(e instanceof UserError, String(e));
      assert.match(e.message, pattern);
      if (secret) assert.ok(!e.message.includes(secret), e.message);
      return true;
    },
  );

test('a mysql-url gives host, port, user and password (% escapes decoded)', () => {
  assert.deepEqual(parseConnection(reader({ 'mysql-url': 'mysql://backup:p%40ss%25w@db.internal:3307' })), {
    host: 'db.internal',
    port: 3307,
    user: 'backup',
    password: 'p@ss%w',
    ssl: { mode: 'preferred', ca: undefined },
  });
});

test('a malformed % escape in mysql-url is one clear line that does not repeat the URL', () => {
  refused(
    { 'mysql-url': 'mysql://backup:s3cr%zzet@db.internal' },
    /^mysql-url: the password has a malformed % escape \(write a % itself as %25\); accepted: mysql:\/\/user:password@host:port/,
    's3cr',
  );
  refused({ 'mysql-url': 'mysql://us%e9r:x@db.internal' }, /^mysql-url: the user has a malformed % escape/);
});

test('mysql-url together with host, port, user, password or socket is refused, naming them', () => {
  const url = 'mysql://backup:s3cret@db.internal';
  for (const [name, value] of [
    ['host', 'db2.internal'],
    ['port', '3307'],
    ['user', 'admin'],
    ['password', 'other'],
    ['socket', '/run/mysqld/mysqld.sock'],
  ]) {
    refused(
      { 'mysql-url': url, [name!]: value! },
      new RegExp(
        `^mysql-url: give either mysql-url or host, port, socket, user, password, not both \\(also given: ${name}\\)$`,
      ),
      's3cret',
    );
  }
  // At their defaults (as an action always passes them) they are not "given".
  assert.equal(parseConnection(reader({ 'mysql-url': url })).host, 'db.internal');
});

test('options in a mysql-url are refused rather than ignored', () => {
  refused(
    { 'mysql-url': 'mysql://backup:s3cret@db.internal/?ssl=true' },
    /^mysql-url: options in the URL/,
    's3cret',
  );
});
