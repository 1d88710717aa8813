// An EIP-1193 wallet injected as window.ethereum for the browser tests: it forwards to the
// local chain's node (anvil signs typed data and sends transactions for its unlocked
// accounts), so every signature and transaction the page asks for is real. Knobs on
// window.__wallet (set before load through the init script, or later with page.evaluate):
//   account           the address it exposes
//   rpcUrl            anvil's URL
//   chainId           null: the chain's own; a number: the chain it claims to be on
//   refuseSwitch      wallet_switchEthereumChain fails (4902, unknown chain) instead of switching
//   rejectSignatures  eth_signTypedData_v4 fails with 4001, as when the person clicks Reject
//   rejectTransactions eth_sendTransaction fails with 4001
//   log               every method the page called, in order
(() => {
  const state = window.__wallet;
  state.log = [];
  const listeners = {};
  let id = 0;
  const rejected = () => Object.assign(new Error("User rejected the request."), { code: 4001 });
  const emit = (event, value) => (listeners[event] || []).forEach((fn) => fn(value));
  async function forward(method, params) {
    const response = await fetch(state.rpcUrl, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: ++id, method, params: params || [] }),
    });
    const body = await response.json();
    if (body.error) throw Object.assign(new Error(body.error.message), { code: body.error.code, data: body.error.data });
    return body.result;
  }
  window.ethereum = {
    isOpenLedgerTestWallet: true,
    async request({ method, params }) {
      state.log.push(method);
      switch (method) {
        case "eth_requestAccounts":
        case "eth_accounts":
          return [state.account];
        case "eth_chainId":
          return state.chainId === null ? forward(method, params) : "0x" + state.chainId.toString(16);
        case "wallet_switchEthereumChain":
          if (state.refuseSwitch) throw Object.assign(new Error("Unrecognized chain ID."), { code: 4902 });
          state.chainId = null;
          emit("chainChanged", await forward("eth_chainId"));
          return null;
        case "wallet_addEthereumChain":
          if (state.refuseSwitch) throw rejected();
          return null;
        case "eth_signTypedData_v4":
          if (state.rejectSignatures) throw rejected();
          return forward(method, params);
        case "eth_sendTransaction":
          if (state.rejectTransactions) throw rejected();
          return forward(method, params);
        default:
          return forward(method, params);
      }
    },
    on(event, fn) {
      (listeners[event] = listeners[event] || []).push(fn);
      return this;
    },
    removeListener(event, fn) {
      listeners[event] = (listeners[event] || []).filter((f) => f !== fn);
      return this;
    },
  };
})();
