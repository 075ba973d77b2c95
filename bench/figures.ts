/**
 * The figures a benchmark hands to bench/all.ts: one JSON line each, appended to the file
 * LIFEBOAT_BENCH_FIGURES names (nothing when a benchmark runs alone).
 */
import { appendFileSync } from 'node:fs';

export interface Figure {
  /** The figure's key, as bench/all.ts's table names it. */
  key: string;
  value: number;
  /** What the value is: a ratio (Lifeboat / peer), seconds, MiB, objects/s. */
  unit: 'ratio' | 's' | 'MiB' | 'objects/s';
  /** Where it was measured, in a few words (the peer, the server, the size). */
  detail?: string;
}

export function recordFigure(figure: Figure): void {
  const file = process.env.LIFEBOAT_BENCH_FIGURES;
  if (file) appendFileSync(file, `${JSON.stringify(figure)}\n`);
}
