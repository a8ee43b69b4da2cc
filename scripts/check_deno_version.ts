/**
 * Refuses to run the test suite on any Deno but the pinned one.
 *
 * Deno 2.9.4–2.9.6 abort inside node:http2 when a gRPC peer disconnects (denoland/deno#36788);
 * the relay's disconnect tests are what justify moving this pin.
 */
export const PINNED_DENO = "2.9.3";

if (import.meta.main) {
  if (Deno.version.deno !== PINNED_DENO) {
    console.error(
      `meshrelay tests need Deno ${PINNED_DENO} (found ${Deno.version.deno}). ` +
        `Install it with: npm i -g deno@${PINNED_DENO}`,
    );
    Deno.exit(1);
  }
}
