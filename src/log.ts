/**
 * The launcher's and shards' messages: one whole line per write, so lines from N processes
 * sharing stdout never interleave mid-line.
 * @module
 */
const line = (stream: NodeJS.WriteStream, text: string) => stream.write(`shardport: ${text}\n`);

export const log = {
  info: (text: string) => line(process.stdout, text),
  warn: (text: string) => line(process.stderr, `warning: ${text}`),
  error: (text: string) => line(process.stderr, `error: ${text}`),
};
