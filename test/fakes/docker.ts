/**
 * A stateful fake of the `docker` CLI for what verify-restore's docker environment uses —
 * no Docker engine can run on this machine. A "container" of `mariadb:<major.minor>` is a
 * real throwaway MariaDB server of the local binaries, run by a detached keeper process, so
 * long as the tag matches the local server's version; any other image fails the way docker
 * does when a tag does not exist. State lives in LIFEBOAT_FAKE_DOCKER_DIR.
 *
 *   docker run --detach --name N [--label L] [--env E]… --publish 127.0.0.1::3306 IMAGE [ARGS…]
 *   docker port N 3306/tcp            docker rm --force [--volumes] N
 *   docker ps --all --quiet --filter name=^N$
 *   (keeper) docker.ts --keep N IMAGE ARGS…
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { isAlive, startEphemeralServer } from '../../shared/mysql/ephemeral.ts';

const dir = process.env.LIFEBOAT_FAKE_DOCKER_DIR ?? '/tmp/lifeboat-fake-docker';
fs.mkdirSync(dir, { recursive: true });
const stateOf = (name: string) => path.join(dir, `${name}.json`);
const portOf = (name: string) => path.join(dir, `${name}.port`);
interface Container {
  id: string;
  name: string;
  image: string;
  keeper: number;
}
const read = (name: string): Container | undefined => {
  try {
    return JSON.parse(fs.readFileSync(stateOf(name), 'utf8'));
  } catch {
    return undefined;
  }
};
const fail = (message: string, code = 1): never => {
  process.stderr.write(`${message}\n`);
  process.exit(code);
};

const [command, ...args] = process.argv.slice(2);

if (command === '--keep') {
  const [name, image, ...serverArgs] = args as [string, string, ...string[]];
  const server = await startEphemeralServer({
    parent: dir,
    options: serverArgs.filter((a) => a.startsWith('--')),
  });
  // Its own file: the run command may still be writing the container's state.
  fs.writeFileSync(portOf(name), JSON.stringify({ image, port: server.port }));
  const stop = async () => {
    await server.stop();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  setInterval(() => {}, 1 << 30);
} else if (command === 'run') {
  let name = `fake_${randomBytes(3).toString('hex')}`;
  let i = 0;
  for (; i < args.length && args[i]!.startsWith('--'); i++) {
    const flag = args[i]!;
    if (flag === '--detach') continue;
    if (flag === '--name') name = args[++i]!;
    else if (['--label', '--env', '--publish'].includes(flag)) i++;
    else fail(`unknown flag: ${flag}`, 125);
  }
  const image = args[i] ?? fail('"docker run" requires at least 1 argument.', 125);
  const serverArgs = args.slice(i + 1);
  if (read(name))
    fail(
      `docker: Error response from daemon: Conflict. The container name "/${name}" is already in use.`,
      125,
    );
  const version = execFileSync('mariadbd', ['--version'], { encoding: 'utf8' });
  const [, major, minor] = /(\d+)\.(\d+)/.exec(version)!;
  if (image !== `mariadb:${major}.${minor}`) {
    fail(
      `Unable to find image '${image}' locally\ndocker: Error response from daemon: manifest for ${image} not found: manifest unknown: manifest unknown.`,
      125,
    );
  }
  const id = randomBytes(32).toString('hex');
  const log = fs.openSync(path.join(dir, `${name}.log`), 'a');
  const keeper = spawn(process.execPath, [import.meta.filename, '--keep', name, image, ...serverArgs], {
    detached: true,
    stdio: ['ignore', log, log],
  });
  keeper.unref();
  fs.writeFileSync(stateOf(name), JSON.stringify({ id, name, image, keeper: keeper.pid }));
  process.stdout.write(`${id}\n`);
} else if (command === 'port') {
  const [name] = args as [string];
  read(name) ?? fail(`Error response from daemon: No such container: ${name}`);
  // Like docker, the mapping exists at once; the server behind it comes up a little later.
  let port: number | undefined;
  for (let n = 0; !port && n < 600; n++) {
    try {
      port = JSON.parse(fs.readFileSync(portOf(name), 'utf8')).port;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  if (!port) fail(`fake docker: the server of ${name} did not start; see ${path.join(dir, `${name}.log`)}`);
  process.stdout.write(`127.0.0.1:${port}\n`);
} else if (command === 'rm') {
  const name = args.filter((a) => !a.startsWith('--')).at(-1)!;
  const c = read(name) ?? fail(`Error response from daemon: No such container: ${name}`);
  if (isAlive(c.keeper)) process.kill(c.keeper, 'SIGTERM');
  for (let n = 0; n < 300 && isAlive(c.keeper); n++) await new Promise((resolve) => setTimeout(resolve, 100));
  fs.rmSync(stateOf(name), { force: true });
  fs.rmSync(portOf(name), { force: true });
  fs.rmSync(path.join(dir, `${name}.log`), { force: true });
  process.stdout.write(`${name}\n`);
} else if (command === 'ps') {
  const filter = args[args.indexOf('--filter') + 1] ?? '';
  const wanted = /^name=\^?(.*?)\$?$/.exec(filter)?.[1];
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.json'))) {
    const c = read(file.slice(0, -5));
    if (c && (!wanted || c.name === wanted)) process.stdout.write(`${c.id.slice(0, 12)}\n`);
  }
} else {
  fail(`docker: '${command}' is not a docker command (the fake knows run, port, rm, ps)`);
}
