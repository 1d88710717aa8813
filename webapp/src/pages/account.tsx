import { Section } from "../components/ui";

export function AccountPage(_props: { params: string[] }) {
  return <Section title="AccountPage"><p>Not built yet.</p></Section>;
}

