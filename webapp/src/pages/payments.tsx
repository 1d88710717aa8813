import { Section } from "../components/ui";

export function PaymentsPage(_props: { params: string[] }) {
  return <Section title="PaymentsPage"><p>Not built yet.</p></Section>;
}

export function UsageProofPage(_props: { params: string[] }) {
  return <Section title="UsageProofPage"><p>Not built yet.</p></Section>;
}

