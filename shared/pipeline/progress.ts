/** A sink for human-readable lines; the actions, the CLI and tests each provide one. */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
}

export const silentLogger: Logger = { info() {}, warn() {} };

const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  if (seconds > 0 && seconds < 1) return `${Math.round(seconds * 1000)}ms`;
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  return h > 0
    ? `${h}h${String(m).padStart(2, '0')}m`
    : m > 0
      ? `${m}m${String(rest).padStart(2, '0')}s`
      : `${rest}s`;
}

/**
 * Prints `label: 1.2 GiB of 3.0 GiB (40%), 85.3 MiB/s, ETA 22s` every `intervalMs`
 * while work runs, from a counter it reads. Stop it with `stop()`, which prints a final line.
 */
export function startProgress(
  logger: Logger,
  label: string,
  read: () => number,
  options: { total?: number; intervalMs?: number; now?: () => number } = {},
): { stop(): void } {
  const now = options.now ?? Date.now;
  const started = now();
  const line = (final: boolean) => {
    const done = read();
    const seconds = Math.max((now() - started) / 1000, 0.001);
    const rate = done / seconds;
    const parts = [`${label}: ${formatBytes(done)}`];
    if (options.total)
      parts[0] += ` of ${formatBytes(options.total)} (${Math.min(100, Math.floor((done / options.total) * 100))}%)`;
    parts.push(`${formatBytes(rate)}/s`);
    if (final) parts.push(`in ${formatDuration(seconds)}`);
    else if (options.total && rate > 0) parts.push(`ETA ${formatDuration((options.total - done) / rate)}`);
    logger.info(parts.join(', '));
  };
  const timer = setInterval(() => line(false), options.intervalMs ?? 10_000);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      line(true);
    },
  };
}
