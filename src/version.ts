/** meshrelay's version, printed by `meshrelay version` and sent by agents in their hello. */
export const VERSION = "0.1.0";
