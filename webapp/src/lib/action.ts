// One user action (send, sign, upload) as state a component shows: busy, the error, the outcome.

import { useCallback, useState } from "preact/hooks";

export interface Action {
  busy: boolean;
  error: string | null;
  done: string | null;
  run: (what: () => Promise<string | null>) => Promise<void>;
  clear: () => void;
}

export function useAction(): Action {
  const [state, setState] = useState<{ busy: boolean; error: string | null; done: string | null }>({ busy: false, error: null, done: null });
  const run = useCallback(async (what: () => Promise<string | null>) => {
    setState({ busy: true, error: null, done: null });
    try {
      const done = await what();
      setState({ busy: false, error: null, done });
    } catch (error) {
      setState({ busy: false, error: error instanceof Error ? error.message : String(error), done: null });
    }
  }, []);
  const clear = useCallback(() => setState({ busy: false, error: null, done: null }), []);
  return { ...state, run, clear };
}
