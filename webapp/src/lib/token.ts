// OPEN balances and allowances of the connected wallet.

import { OpenTokenAbi } from "../generated/abis";
import type { Wallet } from "./wallet";

export function balanceOf(wallet: Wallet, account = wallet.account): Promise<bigint> {
  return wallet.read<bigint>({ contract: "OpenToken", abi: OpenTokenAbi, functionName: "balanceOf", args: [account] });
}

/** Approves `spender` (a contract by name) for `amount` when the allowance is below it: one
 * wallet request, and none when it is already enough. */
export async function ensureAllowance(wallet: Wallet, spender: string, amount: bigint): Promise<void> {
  const spenderAddress = wallet.address(spender);
  const allowance = await wallet.read<bigint>({ contract: "OpenToken", abi: OpenTokenAbi, functionName: "allowance", args: [wallet.account, spenderAddress] });
  if (allowance >= amount) return;
  await wallet.send(`approving ${spender} to take the OPEN`, { contract: "OpenToken", abi: OpenTokenAbi, functionName: "approve", args: [spenderAddress, amount] });
}
