// Reads a results file of one JSON object a line; a file not written yet reads as none.
import { existsSync, readFileSync } from "node:fs";

export function readJsonLines(path) {
  return existsSync(path)
    ? readFileSync(path, "utf8")
        .trim()
        .split("\n")
        .filter(Boolean)
        .map((line) => JSON.parse(line))
    : [];
}
