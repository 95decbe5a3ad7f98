// Verify an otpd delivery in Node (quoted by the README; run by tests/receivers.rs).
//
// npm install standardwebhooks
import { createHmac, timingSafeEqual } from "node:crypto";
import { Webhook } from "standardwebhooks";

// A registered webhook's `whsec_...` secret is used as is; a plain
// `callback_secret` (or delivery-report `webhook_secret`) keys the HMAC with its
// UTF-8 bytes, which the library takes as base64.
export function standardWebhooksKey(secret) {
  return secret.startsWith("whsec_") ? secret : Buffer.from(secret, "utf8").toString("base64");
}

// Returns the parsed event, or throws if a signature does not verify. `headers`
// with lower-case names; `body` the raw string, before any JSON parsing. Rejects a
// `webhook-timestamp` more than 5 minutes from this clock (replays).
export function verify(secret, headers, body) {
  const event = new Webhook(standardWebhooksKey(secret)).verify(body, headers);
  // Optional: otpd's own header, HMAC-SHA256 of the body keyed by the secret as is.
  const expected = Buffer.from(
    "sha256=" + createHmac("sha256", Buffer.from(secret, "utf8")).update(body).digest("hex"),
  );
  const got = Buffer.from(headers["x-otpd-signature"] ?? "");
  if (got.length !== expected.length || !timingSafeEqual(got, expected)) {
    throw new Error("X-Otpd-Signature does not match");
  }
  return event;
}

// Test entry point: {"secret": ..., "headers": {...}, "body": "..."} on stdin.
if (import.meta.url === `file://${process.argv[1]}`) {
  let input = "";
  process.stdin.on("data", (chunk) => (input += chunk));
  process.stdin.on("end", () => {
    const delivery = JSON.parse(input);
    const event = verify(delivery.secret, delivery.headers, delivery.body);
    console.log("valid", event.event);
  });
}
