/**
 * The inputs that say which MySQL or MariaDB server a command talks to, and their parsing:
 * the command layer's side of shared/mysql/connection.ts (which knows nothing of inputs).
 */
import { parseInteger } from '../../action/inputs.ts';
import type { InputReader, InputSpec } from '../../action/spec.ts';
import { UserError } from '../../errors.ts';
import { type MysqlTarget, parseMysqlUrl, type SslMode, sslModes } from '../../mysql/connection.ts';

/** The connection inputs every MySQL command shares (dump-mysql, restore, verify-restore). */
export const connectionInputs = (role: string): InputSpec[] => [
  {
    name: 'mysql-url',
    description: `The ${role} as one URL, mysql://user:password@host:3306 (secret; on the CLI only from LIFEBOAT_MYSQL_URL). Instead of host, port, user, password.`,
    secretEnv: 'LIFEBOAT_MYSQL_URL',
  },
  { name: 'host', description: `The ${role}'s host name or IP address.`, default: '127.0.0.1' },
  { name: 'port', description: `The ${role}'s TCP port.`, default: '3306' },
  { name: 'socket', description: `A Unix socket of the ${role}, instead of host and port.` },
  { name: 'user', description: 'The MySQL user.', default: 'root' },
  {
    name: 'password',
    description:
      'The MySQL password (secret; on the CLI only from LIFEBOAT_MYSQL_PASSWORD). Never passed as a process argument.',
    secretEnv: 'LIFEBOAT_MYSQL_PASSWORD',
  },
  {
    name: 'ssl-mode',
    description: 'TLS to the server: disabled, preferred, required, verify-ca or verify-identity.',
    default: 'preferred',
  },
  { name: 'ssl-ca', description: 'A PEM file of the certificate authority for verify-ca / verify-identity.' },
];

/**
 * Parses the connection inputs; a URL and separate fields may not be mixed. (An action passes
 * every input its action.yml defaults, so host, port and user count as given when they differ
 * from their defaults.)
 */
export function parseConnection(read: InputReader): MysqlTarget {
  const mode = (read('ssl-mode')?.trim().toLowerCase() || 'preferred') as SslMode;
  if (!sslModes.includes(mode)) {
    throw new UserError(`ssl-mode: '${read('ssl-mode')}' is not accepted; accepted: ${sslModes.join(', ')}`);
  }
  const ca = read('ssl-ca')?.trim() || undefined;
  if (ca && (mode === 'disabled' || mode === 'preferred' || mode === 'required')) {
    throw new UserError(`ssl-ca: only used with ssl-mode verify-ca or verify-identity (ssl-mode is ${mode})`);
  }
  const ssl = { mode, ca };
  const url = read('mysql-url')?.trim();
  if (url) {
    // The separate inputs a mysql-url replaces, with the default each reads as.
    const urlReplaces: [name: string, fallback: string | undefined][] = [
      ['host', '127.0.0.1'],
      ['port', '3306'],
      ['socket', undefined],
      ['user', 'root'],
      ['password', undefined],
    ];
    const also = urlReplaces
      .filter(([name, fallback]) => {
        const value = name === 'password' ? read(name) : read(name)?.trim();
        return value !== undefined && value !== '' && value !== fallback;
      })
      .map(([name]) => name);
    if (also.length) {
      throw new UserError(
        `mysql-url: give either mysql-url or ${urlReplaces.map(([n]) => n).join(', ')}, not both (also given: ${also.join(', ')})`,
      );
    }
    return { ...parseMysqlUrl(url), ssl };
  }
  const socket = read('socket')?.trim() || undefined;
  return {
    host: socket ? undefined : read('host')?.trim() || '127.0.0.1',
    port: socket ? undefined : parseInteger('port', read('port'), { min: 1, max: 65535 }) || 3306,
    socket,
    user: read('user')?.trim() || 'root',
    password: read('password') || undefined,
    ssl,
  };
}
