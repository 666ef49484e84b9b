// Debian's Chromium, headless, driven by playwright-core.
import { chromium } from "playwright-core";

// Without the background-networking flags Chromium phones home at start-up, which a closed
// network refuses and which the tests would rightly flag as a non-loopback request.
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export function launchChromium() {
  const executablePath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
  return chromium.launch({ executablePath, args: ARGS });
}
