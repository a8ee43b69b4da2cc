import { MemorySecretStore } from "./memory_store.ts";
import { secretStoreContract } from "./contract_test_suite.ts";

Deno.test("MemorySecretStore passes the SecretStore contract", async (t) => {
  await secretStoreContract(t, () => Promise.resolve(new MemorySecretStore()));
});
